"""Sends this node's facts to the controllers: at once on every change, and as a heartbeat.

The heartbeat lets a restarted controller learn every node's health and lb addresses within
seconds; a change is sent immediately because the 1 s health budget starts at the event.  A
heartbeat that repeats what a controller already accepted carries only the report's digest
(report_digest.py); the controller answers 409 if it does not hold it, and the whole report
follows at once.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from ..report_digest import report_digest
from .controller_client import ControllerClient, ControllerError, ControllerUnreachable, ReportNotHeld

log = logging.getLogger(__name__)


class Reporter:
    """One sender thread per controller: each sends the latest facts at once on a change and
    every `heartbeat` seconds, so a slow or dead controller never delays the others."""

    def __init__(self, client: ControllerClient, current: Callable[[], Optional[dict]], heartbeat: float = 5.0):
        self.client, self.current, self.heartbeat = client, current, heartbeat
        self._stop = threading.Event()
        self._changed = [threading.Event() for _ in client.urls]
        self.errors: dict[str, str] = {}  # url -> last error, for logs and health
        self.accepted: dict[int, str] = {}  # controller index -> digest of the last report it took
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"reporter-{i}", daemon=True)
                        for i in range(len(client.urls))]

    def start(self) -> "Reporter":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for event in self._changed:
            event.set()

    def changed(self) -> None:
        for event in self._changed:
            event.set()

    def _run(self, index: int) -> None:
        url = self.client.urls[index]
        while not self._stop.is_set():
            self._changed[index].wait(self.heartbeat)
            self._changed[index].clear()
            if self._stop.is_set():
                return
            report = self.current()
            if report is None:
                continue  # nothing known yet; the first full read will call changed()
            try:
                self.send(index, report)
            except ControllerError as err:
                if self.errors.get(url) != str(err):
                    log.warning("node report not delivered to %s: %s", url, err)
                self.errors[url] = str(err)
                continue
            if self.errors.pop(url, None):
                log.info("reports reach %s again", url)

    def send(self, index: int, report: dict) -> None:
        """The digest alone when this controller took this very report already, else the whole."""
        digest = report_digest(report)
        if self.accepted.get(index) == digest:
            try:
                self.client.report_to(index, {"node_id": report["node_id"], "same_as": digest,
                                              "sent_at": report["sent_at"]})
                return
            except ReportNotHeld:
                pass  # it restarted or lost it: the whole report, now
            except ControllerUnreachable:
                raise  # the whole report would not get through either
            except ControllerError as err:  # e.g. a controller too old to know digests
                log.debug("heartbeat by digest refused by %s (%s): sending the whole report",
                          self.client.urls[index], err)
        self.accepted.pop(index, None)
        self.client.report_to(index, report)
        self.accepted[index] = digest
