"""A small JSON HTTP server for the daemons: routes, bearer-token auth, bounded resources.

aiohttp on one asyncio loop (its own thread), because hundreds of agents long-poll the
controller: a waiting request costs a coroutine, not a thread, and aiohttp parses HTTP with
limits on request line and header sizes.  The bounds of http_limits.Limits (connection budgets
per client address with a short deadline for unauthenticated connections, see http_gate.py;
header/body/send timeouts, body size, JSON depth) sit on top.  Handlers keep the simple
interface: `handler(Request) -> (status, body, content_type)`; a plain function runs in a
small thread pool (it may block), an `async def` one on the loop (a long-poll that awaits).

Every path under `/v1/` needs a credential (a token, or an Authenticator that tells whose it
is: daemon/credentials.py); `/healthz` and `/metrics` do not (no secrets, and probes have no
token).  With a TLS context the server speaks HTTPS only.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from aiohttp import web

from .credentials import Authenticator, Principal, TokenAuth
from .http_gate import ConnectionGate, GatedProtocol
from .http_limits import BadRequest, Limits, QuietLog, parse_json, read_body

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
MAX_BODY = Limits.max_body


@dataclass(frozen=True)
class Request:
    """What a handler sees: method, path, query (last value per key), headers, parsed JSON body,
    and for /v1/ paths the principal its credential speaks for."""
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    client: str = ""
    principal: Optional[Principal] = None


# A handler returns (status, body, content_type).  A body that is not bytes/str/None is sent as
# JSON; content_type None means application/json.
Response = tuple[int, Any, Optional[str]]
Handler = Callable[[Request], Response]
Routes = Mapping[tuple[str, str], Handler]


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIX)


class HttpService:
    """Serves `routes` ({(method, path): handler}) on `address` from a background thread.

    `token` is the token of the /v1/ paths (full access), an Authenticator, or None when no
    route is under /v1/.  The socket is bound here, so a busy port fails at construction.
    """

    def __init__(self, address: tuple[str, int], routes: Routes, token: Union[str, Authenticator, None],
                 limits: Limits = Limits(), tls: Optional[ssl.SSLContext] = None):
        if token is None and any(is_protected(path) for _, path in routes):
            raise ValueError(f"routes under {PROTECTED_PREFIX} need a token")
        self._routes = dict(routes)
        self._auth = TokenAuth(token) if isinstance(token, str) else token
        self.limits, self._tls = limits, tls
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self._bound = self._sock.getsockname()[:2]  # still known once stopped
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=limits.workers,
                                                           thread_name_prefix=f"http-{self.port}")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._web: Optional[web.Server] = None
        self.gate: Optional[ConnectionGate] = None  # made on the loop

    @property
    def port(self) -> int:
        return self._bound[1]

    @property
    def host(self) -> str:
        return self._bound[0]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Open connections (admitted ones, not those refused over the cap)."""
        return self.gate.connections if self.gate is not None else 0

    def start(self) -> "HttpService":
        if self._thread is None:
            ready: concurrent.futures.Future = concurrent.futures.Future()
            self._thread = threading.Thread(target=self._run, args=(ready,), name=f"http-{self.port}", daemon=True)
            self._thread.start()
            ready.result()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting, closes every open connection (keep-alive ones too) once requests in
        flight are answered or after half a second, and the socket."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(min(0.25, timeout)), loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError) as exc:
                log.warning("HTTP server on port %d did not stop cleanly: %r", self.port, exc)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self._thread = None
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "HttpService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the loop thread ---------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> None:
        limits = self.limits
        self._web = web.Server(self._handle, handler_cancellation=True, keepalive_timeout=limits.header_timeout,
                               access_log=None, logger=QuietLog(), lingering_time=min(2.0, limits.body_timeout),
                               max_headers=64)
        web_server = self._web
        gate = self.gate = ConnectionGate(limits, asyncio.get_running_loop())
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GatedProtocol(gate, web_server), sock=self._sock, ssl=self._tls,
            ssl_handshake_timeout=min(limits.head_timeout, limits.header_timeout) if self._tls else None)

    async def _shutdown(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        if self._web is not None:
            await self._web.shutdown(grace)

    async def _handle(self, raw: web.BaseRequest) -> web.StreamResponse:
        principal = None
        if is_protected(raw.path):
            principal, problem = self._authenticate(raw.headers.get("Authorization"))
            if problem is not None:
                return await self._send(raw, 401, {"error": problem}, None,
                                        {"WWW-Authenticate": 'Bearer realm="ingressmesh"'})
            if self.gate is not None and raw.transport is not None:
                self.gate.trust(raw.transport)  # a credential holder: out of the pending budgets
        try:
            body = parse_json(await read_body(raw.content, raw.content_length, self.limits),
                              self.limits.max_json_depth)
        except BadRequest as exc:
            return await self._send(raw, exc.status, {"error": str(exc)}, None, close=exc.status != 400)
        request = Request(raw.method, raw.path, dict(raw.query.items()), raw.headers, body, raw.remote or "",
                          principal)
        try:
            status, payload, content_type = await self._dispatch(request)
        except Exception:  # noqa: BLE001 - a handler bug is a 500 and a log entry, never a dead server
            log.exception("%s %s failed", request.method, request.path)
            status, payload, content_type = 500, {"error": "internal error (see the server log)"}, None
        return await self._send(raw, status, payload, content_type)

    def _authenticate(self, value: Optional[str]) -> tuple[Optional[Principal], Optional[str]]:
        """(principal, None) for a valid credential, else (None, what is wrong with it)."""
        if not value:
            return None, "missing bearer token (Authorization: Bearer <token>)"
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None, "malformed Authorization header: expected 'Bearer <token>'"
        principal = self._auth.authenticate(given.strip()) if self._auth is not None else None
        return (principal, None) if principal is not None else (None, "wrong bearer token")

    async def _dispatch(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            allowed = sorted(m for m, p in self._routes if p == request.path)
            if allowed:
                return 405, {"error": f"{request.method} not allowed on {request.path}; use {', '.join(allowed)}"}, None
            return 404, {"error": f"no such path: {request.path}"}, None
        if inspect.iscoroutinefunction(handler):
            return await handler(request)
        return await asyncio.get_running_loop().run_in_executor(self._pool, handler, request)

    async def _send(self, raw: web.BaseRequest, status: int, payload: Any, content_type: Optional[str],
                    extra: Optional[Mapping[str, str]] = None, close: bool = False) -> web.StreamResponse:
        """Sends the answer within `send_timeout`: a peer that never reads it loses the connection."""
        response = _response(status, payload, content_type, extra)
        if close or (raw.body_exists and not raw.content.at_eof()):
            response.force_close()  # the body was left unread: never parse it as the next request
        try:
            await asyncio.wait_for(_write(response, raw), self.limits.send_timeout)
        except asyncio.TimeoutError:
            log.info("answer %d to %s not taken within %g s; connection closed", status, raw.remote,
                     self.limits.send_timeout)
            if raw.transport is not None:
                raw.transport.abort()
        return response


async def _write(response: web.StreamResponse, raw: web.BaseRequest) -> None:
    await response.prepare(raw)
    await response.write_eof()


def _response(status: int, payload: Any, content_type: Optional[str],
              extra: Optional[Mapping[str, str]]) -> web.Response:
    headers = {"Server": "ingressmesh", **(extra or {})}
    if status in (204, 304) or payload is None:
        data = b""
    elif isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, str):
        data = payload.encode()
    else:
        data = json.dumps(payload).encode()
    if status not in (204, 304):
        headers["Content-Type"] = content_type or "application/json"
    return web.Response(status=status, body=data or None, headers=headers)
