"""One Docker API call as the filter sees it, and the refusal a rule raises.

The path is judged without its `/vX.Y` version prefix and only in a canonical form (no `%`
escapes, no `.`/`..` segments, no doubled slashes): what is checked is exactly what dockerd's
router will see, never a spelling it would read differently."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional
from urllib.parse import parse_qs

_VERSION = re.compile(r"^/v[0-9]+\.[0-9]+(?=/)")
_SAFE_PATH = re.compile(r"^(/[A-Za-z0-9_.:@-]+)+/?$|^/$")

# GET a path on the real dockerd: its JSON, or None when dockerd says 404.
Lookup = Callable[[str], Awaitable[Optional[dict]]]


class Refused(Exception):
    """Why a call may not pass (the 403's message)."""


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # without the version prefix
    query: dict  # name -> last value
    body: bytes

    @classmethod
    def parse(cls, method: str, raw_path: str, body: bytes) -> "Call":
        path, _, query = raw_path.partition("?")
        if not _SAFE_PATH.match(path) or "/./" in path + "/" or "/../" in path + "/":
            raise Refused(f"path {path[:200]!r} is not in canonical form")
        path = _VERSION.sub("", path, count=1).rstrip("/") or "/"
        try:
            values = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise Refused(f"query {query[:200]!r} is malformed") from None
        return cls(method.upper(), path, {k: v[-1] for k, v in values.items()}, body)

    def json_body(self) -> dict:
        try:
            body = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise Refused("the body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused("the body is not a JSON object")
        return body

    def filters(self) -> dict:
        """The `filters` query parameter (Docker's JSON map of lists), {} when absent."""
        try:
            found = json.loads(self.query.get("filters") or "{}")
        except ValueError:
            raise Refused("filters is not JSON") from None
        if not isinstance(found, dict):
            raise Refused("filters is not a JSON object")
        return found

    def name(self) -> str:
        return f"{self.method} {self.path}"
