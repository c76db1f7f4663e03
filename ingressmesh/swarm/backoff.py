"""Retry pacing for API outages: quick first retries, then capped exponential waits."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    first: float = 0.2
    cap: float = 10.0
    factor: float = 2.0
    current: float = 0.0

    def next_delay(self) -> float:
        """The wait before the next attempt after one more failure."""
        self.current = self.first if self.current == 0 else min(self.cap, self.current * self.factor)
        return self.current

    def reset(self) -> None:
        self.current = 0.0
