"""A handle on one network namespace, by name (`/run/netns/NAME`) or by path.

The empty reference means the namespace this process is in (the host namespace on a node).
Commands run through `nsenter --net`, so nothing in this process changes namespace for them;
sysctls are written from this thread after a pyroute2 `setns`, then the thread goes back.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

from pyroute2 import netns as pyroute2_netns

RUN_DIR = "/run/netns"


class NetnsError(RuntimeError):
    """A namespace that does not exist, or a command in it that failed."""


@dataclass(frozen=True)
class Netns:
    path: str = ""  # "" = the current namespace

    @classmethod
    def from_ref(cls, ref: Optional[str]) -> "Netns":
        if not ref:
            return cls("")
        return cls(ref if "/" in ref else os.path.join(RUN_DIR, ref))

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else "(host)"

    def exists(self) -> bool:
        return not self.path or os.path.exists(self.path)

    def _check(self) -> None:
        if not self.exists():
            raise NetnsError(f"network namespace {self.path} does not exist")

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", *argv] if self.path else list(argv)

    def run(self, argv: Sequence[str], stdin: Optional[str] = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        self._check()
        proc = subprocess.run(self.command(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} in {self.name} failed: {proc.stderr.strip()}")
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread inside the namespace (setns is per thread)."""
        if not self.path:
            yield
            return
        self._check()
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            pyroute2_netns.setns(self.path, flags=0)
            yield
        finally:
            pyroute2_netns.setns(saved, flags=0)
            os.close(saved)

    def sysctl(self, key: str) -> Optional[str]:
        """Read a sysctl (`net.ipv4.ip_forward`) as seen in this namespace; None if absent."""
        path = "/proc/sys/" + key.replace(".", "/")
        with self.entered():
            try:
                with open(path, encoding="ascii") as handle:
                    return handle.read().strip()
            except FileNotFoundError:
                return None

    def set_sysctl(self, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        with self.entered():
            try:
                with open(path, "w", encoding="ascii") as handle:
                    handle.write(str(value))
            except OSError as err:
                raise NetnsError(f"cannot set {key}={value} in {self.name}: {err.strerror}") from None
