"""A Docker event stream that survives outages: reconnect with backoff, tell the caller each time.

Events can be lost while disconnected, so `on_reconnect` runs after every (re)connection: the
caller re-reads the full state then, which is what keeps the event-driven path level-triggered.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from .backoff import Backoff

log = logging.getLogger(__name__)


class EventFollower:
    def __init__(self, make_api: Callable, filters, on_event: Callable[[dict], None],
                 on_reconnect: Callable[[], None], name: str):
        self.make_api, self.filters, self.name = make_api, filters, name
        self.on_event, self.on_reconnect = on_event, on_reconnect
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"events-{name}", daemon=True)
        self.connected = False
        self.last_error = ""
        self._api = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self._api is not None:
            self._close_quietly(self._api)  # unblocks the streaming read

    @staticmethod
    def _close_quietly(api) -> None:
        try:
            api.close()
        except Exception:  # noqa: BLE001 - closing a broken client may fail any way it likes
            pass

    def _run(self) -> None:
        backoff = Backoff()
        while not self.stopped.is_set():
            try:
                if self._api is not None:
                    self._close_quietly(self._api)
                self._api = self.make_api()
                stream = self._api.events(filters={k: list(v) for k, v in self.filters.items()}, decode=True)
                self.connected, self.last_error = True, ""
                backoff.reset()
                self.on_reconnect()
                for event in stream:
                    if self.stopped.is_set():
                        return
                    self.on_event(event)
                raise ConnectionError("event stream ended")
            except Exception as err:  # noqa: BLE001 - any failure of the daemon: retry, never die
                self.connected = False
                if self.stopped.is_set():
                    return
                self.last_error = f"{self.name}: {err}"
                delay = backoff.next_delay()
                log.warning("docker events from %s failed (%s); retrying in %.1f s", self.name, err, delay)
                self.stopped.wait(delay)
