"""Long-polls that wait on the asyncio loop instead of holding a thread each.

The SnapshotStore is thread-safe and blocking (publishers are the swarm and report threads).
One watcher thread waits on it for every new version and wakes the loop; every waiting
request awaits that wake-up.  Hundreds of agents waiting 25 s cost hundreds of coroutines
and one thread, and a new version reaches all of them at once.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Optional

from .store import SnapshotStore

_WATCH_SLICE = 1.0  # the watcher rechecks whether it should stop this often


class LongPoll:
    def __init__(self, store: SnapshotStore):
        self.store = store
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._changed: Optional[asyncio.Future] = None
        self._closed = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    async def wait(self, since: int, timeout: float) -> Optional[int]:
        """Like SnapshotStore.newer_than (the current version once it differs from `since`, None
        after `timeout` s or on close) without blocking the loop."""
        loop = asyncio.get_running_loop()
        self._attach(loop)
        deadline = loop.time() + max(0.0, timeout)
        while True:
            found = self.store.newer_than(since, 0)
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                return None
            assert self._changed is not None
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except asyncio.TimeoutError:
                return None

    def close(self) -> None:
        """Ends every wait now (they answer None); the watcher thread ends within a slice."""
        self._closed = True
        self._stop.set()
        self._wake_threadsafe()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        self._loop, self._changed = loop, loop.create_future()
        if self._thread is None:  # the version is read before any waiter looks: no change is missed
            self._thread = threading.Thread(target=self._watch, args=(self.store.version,), name="long-poll",
                                            daemon=True)
            self._thread.start()

    def _watch(self, seen: int) -> None:
        while not self._stop.is_set():
            found = self.store.newer_than(seen, _WATCH_SLICE)
            if found is None:
                self._stop.wait(0.05)  # a closed store answers at once: never spin
                continue
            seen = found
            self._wake_threadsafe()

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _wake(self) -> None:
        """On the loop: release the current waiters and give later ones a fresh future."""
        changed = self._changed
        if self._loop is not None:
            self._changed = self._loop.create_future()
        if changed is not None and not changed.done():
            changed.set_result(None)
