"""Names the services whose tasks fail TLS verification (`ssl_backend` with a CA).

HAProxy only answers 503 when a task's certificate is not accepted: the operator would see a
dead host and no reason.  So the proxy itself shakes hands with a few tasks of each verified
backend, with the same CA file and host name HAProxy uses, and reports each refusal by service,
task address and cause.  Bounded: at most PER_BACKEND tasks per backend, one short handshake
each, a result kept for RECHECK seconds.  A task that does not answer at all is not reported
(it may be starting; the mesh's health decides that), only one that answers wrongly.
"""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from ..plan import ACTIVE
from .routes import DEFAULT_HOST, RouteTable

PER_BACKEND = 3
RECHECK = 30.0


@dataclass(frozen=True)
class BackendTlsProblem:
    service: str
    address: str
    reason: str

    def line(self) -> str:
        return f"service {self.service}: task {self.address}: {self.reason}"


@dataclass(frozen=True)
class _Target:
    services: tuple[str, ...]
    address: str
    port: int
    ca_file: str
    ca_secret: str
    host: str


def targets(table: RouteTable) -> list[_Target]:
    """The task addresses to check: verified TLS backends only, a few servers of each (pure)."""
    host_of = {}
    for route in table.routes:
        if route.host != DEFAULT_HOST:
            host_of.setdefault(route.backend, route.host)
    found = []
    for backend in table.backends:
        if backend.ssl != "required" or not backend.ca_file:
            continue
        active = [s for s in backend.servers if s.state == ACTIVE][:PER_BACKEND]
        found += [_Target(backend.services, s.address, s.port, backend.ca_file, backend.ca_secret,
                          host_of.get(backend.name, "")) for s in active]
    return found


class BackendTlsCheck:
    """Remembers each (task, CA, host) verdict for RECHECK seconds."""

    def __init__(self, timeout: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.timeout, self.clock = timeout, clock
        self._verdicts: dict[_Target, tuple[float, str]] = {}

    def run(self, table: RouteTable) -> list[BackendTlsProblem]:
        wanted = targets(table)
        now = self.clock()
        self._verdicts = {t: v for t, v in self._verdicts.items() if t in wanted and now - v[0] < RECHECK}
        problems = []
        for target in wanted:
            if target not in self._verdicts:
                reason = self._handshake(target)
                if reason is None:
                    continue  # no answer: not a verdict, asked again next time
                self._verdicts[target] = (now, reason)
            reason = self._verdicts[target][1]
            if reason:
                problems += [BackendTlsProblem(s, f"{target.address}:{target.port}", reason) for s in target.services]
        return sorted(problems, key=lambda p: (p.service, p.address))

    def _handshake(self, target: _Target):
        """'' (accepted), the reason it was refused, or None (no connection)."""
        context = ssl.create_default_context(cafile=target.ca_file)
        context.check_hostname = bool(target.host)  # HAProxy checks the SNI name it sends
        try:
            raw = socket.create_connection((target.address, target.port), timeout=self.timeout)
        except OSError:
            return None
        try:
            with context.wrap_socket(raw, server_hostname=target.host or None):
                return ""
        except ssl.SSLCertVerificationError as err:
            return (f"its TLS certificate is not accepted with the CA in secret {target.ca_secret} "
                    f"({err.verify_message})")
        except ssl.SSLError as err:
            return f"TLS handshake failed ({err.reason or err}): does the task speak TLS on this port?"
        except OSError as err:
            return f"TLS handshake failed ({err.strerror or err})"
        finally:
            raw.close()
