"""What `l7 deploy --watch --listen` answers on /healthz: each proxy service as the last pass left
it (created/updated/unchanged, how it rolls, why its rolling update is stuck, paused or rolled
back), so a stuck proxy update is named where health is read, not only in the log.  The proxies
cannot say it themselves: Swarm's update state and the tasks it cannot place are not in the
snapshot they follow.  503 while any proxy update is stuck or the last pass failed.  The ACME
issuer's failing hosts are listed (`acme_failing`) without a 503: see acme_status.py."""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from .acme_status import failing


class DeployHealth:
    """Written by the reconcile loop, read by the HTTP threads (under a short lock)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._services: dict[str, dict] = {}
        self._notes: tuple[str, ...] = ()
        self._error: Optional[str] = None
        self._passed_at: Optional[float] = None
        self._acme: Optional[Callable[[], list]] = None

    def watch_acme(self, rows: Callable[[], list]) -> None:
        """`rows`: the issuer's per-host state (DeployIssuers.document), read at each request."""
        self._acme = rows

    def passed(self, done, notes=()) -> None:
        """A pass went through: `done` is deployer.deploy_once's list, `notes` other lines it said
        (networks kept off, refused secrets)."""
        services = {d.name: {"outcome": d.outcome, "update_order": d.order, "stuck": d.problem,
                             "mounted_secrets": list(d.mounted)} for d in done}
        with self._lock:
            self._services, self._notes = services, tuple(sorted(notes))
            self._error, self._passed_at = None, self._clock()

    def failed(self, error: str) -> None:
        """A pass failed (controller or Docker unreachable): the last known services stay."""
        with self._lock:
            self._error = error

    def answer(self) -> tuple[int, dict]:
        with self._lock:
            services, notes, error, at = dict(self._services), list(self._notes), self._error, self._passed_at
        stuck = sorted(info["stuck"] for info in services.values() if info["stuck"])
        body = {"ok": not stuck and error is None and at is not None, "stuck": stuck, "last_error": error,
                "seconds_since_last_pass": None if at is None else round(self._clock() - at, 1),
                "proxy_services": services, "notes": notes}
        if self._acme is not None:
            body["acme_failing"] = failing(self._acme())
        return (200 if body["ok"] else 503), body

    def healthz(self, request):
        """daemon/http.py handler."""
        status, body = self.answer()
        return status, body, None
