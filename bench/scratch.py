"""Scratch network namespaces for the benchmark, created and always deleted by their owner.

Why: the benchmark loads hundreds of thousands of nftables objects; doing that anywhere but a
namespace it created itself would disturb the machine.  Every namespace is `imbench-<random>`,
every command goes through `nsenter --net=/run/netns/<name>`, and `close()` (called from a
`finally`) deletes whatever is left, so an error or Ctrl-C leaves nothing behind.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from typing import Optional

PREFIX = "imbench-"
RUN_DIR = "/run/netns"


class ScratchNamespaces:
    """Creates namespaces on demand and deletes each one exactly once (or at close())."""

    def __init__(self) -> None:
        self._live: list[str] = []

    def __enter__(self) -> "ScratchNamespaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> str:
        name = PREFIX + secrets.token_hex(4)
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        self._live.append(name)
        return name

    @staticmethod
    def path(name: str) -> str:
        return os.path.join(RUN_DIR, name)

    def nft(self, name: str, argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        """Run nft inside one of *our* namespaces (refuses any other name)."""
        if name not in self._live or not name.startswith(PREFIX):
            raise ValueError(f"{name} is not a scratch namespace of this run")
        return subprocess.run(["nsenter", f"--net={self.path(name)}", "nft", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def delete(self, name: str) -> Optional[float]:
        """Flush the namespace's ruleset synchronously, then delete it; returns the flush time.

        Flushing first matters: a namespace holding 100k chains is otherwise torn down by a
        kernel worker in the background, which would steal CPU from the next measurement.
        """
        if name not in self._live:
            return None
        started = time.perf_counter()
        try:
            self.nft(name, ["flush", "ruleset"])
        finally:
            flushed = time.perf_counter() - started
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True, timeout=60)
            self._live.remove(name)
        return flushed

    def close(self) -> None:
        for name in list(self._live)[:64]:  # bounded: a run creates a handful
            try:
                self.delete(name)
            except (OSError, subprocess.SubprocessError):
                subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True, timeout=60)
                if name in self._live:
                    self._live.remove(name)
