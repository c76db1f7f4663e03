"""Sends this node's facts to the controllers: at once on every change, and as a heartbeat.

The heartbeat lets a restarted controller learn every node's health and lb addresses within
seconds; a change is sent immediately because the 1 s health budget starts at the event.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from .controller_client import ControllerClient, ControllerError

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, client: ControllerClient, current: Callable[[], Optional[dict]], heartbeat: float = 5.0):
        self.client, self.current, self.heartbeat = client, current, heartbeat
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.last_error = ""
        self.thread = threading.Thread(target=self._run, name="reporter", daemon=True)

    def start(self) -> "Reporter":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def changed(self) -> None:
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.heartbeat)
            self._changed.clear()
            if self._stop.is_set():
                return
            report = self.current()
            if report is None:
                continue  # nothing known yet; the first full read will call changed()
            try:
                self.client.report(report)
                if self.last_error:
                    log.info("reports reach the controller again")
                self.last_error = ""
            except ControllerError as err:
                if str(err) != self.last_error:
                    log.warning("node report not delivered: %s", err)
                self.last_error = str(err)
