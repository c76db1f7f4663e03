"""systemd's notify protocol (sd_notify) without libsystemd, plus a watchdog pinger.

`Type=notify` units tell systemd when they are ready and, with `WatchdogSec=`, must ping it
regularly or be restarted.  Outside systemd (NOTIFY_SOCKET unset) every call is a no-op, so
the daemons call it unconditionally.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Callable, Mapping, Optional

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify datagrams to the socket named by NOTIFY_SOCKET (a path or `@abstract`)."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None):
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace: the kernel wants a NUL there.
        self._address: Optional[str] = ("\0" + raw[1:]) if raw.startswith("@") else (raw or None)
        self._watchdog_interval = _watchdog_interval(env)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> Optional[float]:
        """systemd's WatchdogSec in seconds when the watchdog is meant for this process, else None."""
        return self._watchdog_interval

    def ready(self) -> bool:
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        # One line only: a newline would start a new assignment in the datagram.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def notify(self, message: str) -> bool:
        """Sends one datagram; True when sent.  Failures are logged, never raised: a lost
        notification must not take the daemon down."""
        if self._address is None:
            return False
        try:
            with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)
                sock.sendto(message.encode(), self._address)
            return True
        except OSError as exc:
            log.warning("sd_notify %r to %r failed: %s", message, self._address.replace("\0", "@"), exc)
            return False


def _watchdog_interval(env: Mapping[str, str]) -> Optional[float]:
    """WATCHDOG_USEC in seconds; None if unset, invalid, or meant for another pid (WATCHDOG_PID)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    return usec / 1_000_000 if usec > 0 else None


class Watchdog:
    """Pings the systemd watchdog at half its interval, but only while `alive()` is True.

    `alive` should say that the main loop made progress recently; when the loop wedges the pings
    stop and systemd restarts the service, which a plain timer thread would hide.
    """

    def __init__(self, notifier: Notifier, alive: Callable[[], bool], interval: Optional[float] = None):
        self._notifier, self._alive = notifier, alive
        full = interval if interval is not None else notifier.watchdog_interval
        self.period: Optional[float] = full / 2 if full else None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "Watchdog":
        """Starts pinging; does nothing when there is no watchdog to ping."""
        if self.period is None or not self._notifier.enabled or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                healthy = self._alive()
            except Exception:  # a broken probe counts as not alive
                log.exception("watchdog alive() check failed")
                healthy = False
            if healthy:
                self._notifier.watchdog()
            else:
                log.warning("main loop not alive: withholding the systemd watchdog ping")
