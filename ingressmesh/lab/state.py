"""The lab's state file: what `up` created, written as it is created, so `down` after a crash
knows what to remove (down also searches by name, in case this file is missing or stale)."""
from __future__ import annotations

import json
import os
from typing import Any


class LabState:
    """A JSON document in the lab dir, rewritten atomically after each change."""

    def __init__(self, path: str, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = data if data is not None else {
            "netns": [], "run_dirs_created": [], "dockerds": {}, "phase": "new"}

    @classmethod
    def load(cls, path: str) -> "LabState":
        """The recorded state, or an empty one if the file is missing or unreadable."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if isinstance(data, dict):
                return cls(path, data)
        except (OSError, ValueError):
            pass
        return cls(path)

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def add(self, key: str, value: Any) -> None:
        if value not in self.data.setdefault(key, []):
            self.data[key].append(value)
        self.save()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def dockerd(self, n: int, pid: int, started: int | None) -> None:
        self.data.setdefault("dockerds", {})[str(n)] = {"pid": pid, "start": started}
        self.save()

    @property
    def dockerds(self) -> dict[int, dict]:
        return {int(k): v for k, v in self.data.get("dockerds", {}).items()}
