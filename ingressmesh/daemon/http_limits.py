"""The resource bounds of the daemons' HTTP server, and the pieces that enforce them.

An API reachable from every node must not be knocked over by a peer that opens connections
and sends nothing, sends half a request, sends a huge or deeply nested body, or never reads
the answer.  Each bound below is one of those.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_connections: int = 1024  # open connections; beyond: a silent unauthenticated one is evicted, else 503
    # Connection budgets (http_gate.py): a connection is pending until a request on it presents a
    # valid credential; pending ones are evicted (silent, oldest first) past these, trusted never.
    max_pending: int = 256  # pending connections in all
    max_pending_per_client: int = 16  # pending connections per client address
    max_per_client: int = 512  # connections of any kind per client address
    pending_grace: float = 1.0  # a pending connection younger than this is not evicted for the pending budgets
    head_timeout: float = 5.0  # from accept to an authenticated request head (and the TLS handshake)
    header_timeout: float = 15.0  # keep-alive idle time of a connection; a request head within it
    body_timeout: float = 15.0  # for a whole request body once the head is in
    send_timeout: float = 30.0  # for the peer to take the whole answer
    max_body: int = 1 << 20  # a node report is a few KiB
    max_json_depth: int = 32  # a report nests 3 deep
    workers: int = 8  # threads for handlers that block (plain functions); async handlers need none


class BadRequest(Exception):
    """A request refused before its handler runs; `status` is the answer's HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_body(content: asyncio.StreamReader, length: Optional[int], limits: Limits) -> bytes:
    """The whole body, refused (413) past `max_body` whatever Content-Length said, and (408)
    when it does not arrive within `body_timeout`."""
    if length is not None and length > limits.max_body:
        raise BadRequest(413, f"body of {length} bytes is over the {limits.max_body}-byte limit")

    async def read() -> bytes:
        chunks, size = [], 0
        while True:
            chunk = await content.read(64 * 1024)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limits.max_body:
                raise BadRequest(413, f"body is over the {limits.max_body}-byte limit")
            chunks.append(chunk)
    try:
        return await asyncio.wait_for(read(), limits.body_timeout)
    except asyncio.TimeoutError:
        raise BadRequest(408, f"body not received within {limits.body_timeout:g} s") from None


def parse_json(raw: bytes, max_depth: int) -> Any:
    """The JSON value of `raw` (None when empty); BadRequest(400) naming what is wrong."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequest(400, f"malformed JSON body: nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, f"malformed JSON body: {exc}") from None
    if _depth(value, max_depth) > max_depth:
        raise BadRequest(400, f"malformed JSON body: nested deeper than {max_depth} levels")
    return value


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of `value`, counted without recursion and no further than limit + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


_BUSY_BODY = b'{"error": "too many connections; try another controller or again shortly"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class Busy(asyncio.Protocol):
    """A connection over the cap: answered 503 once its request head starts (so the peer reads
    the answer rather than a reset), or after a second of silence, then closed."""

    def __init__(self) -> None:
        self._transport: Optional[asyncio.Transport] = None
        self._timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(1.0, self._answer)

    def data_received(self, data: bytes) -> None:
        self._answer()

    def _answer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(BUSY)
            self._transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self._timer is not None:
            self._timer.cancel()


class QuietLog:
    """aiohttp's protocol logger, minus tracebacks: a malformed request from the network is a
    one-line debug message, not a stack trace on stderr."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.debug(msg, *args)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.debug(msg, *args)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.warning(msg, *args)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        log.info(msg + ": %r", *args, kwargs.get("exc_info"))

    exception = error
