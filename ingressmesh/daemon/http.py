"""A tiny JSON HTTP server for the daemons: routes, bearer-token auth, errors that say why.

Stdlib only (ThreadingHTTPServer, one thread per connection) because the traffic is a handful
of agents long-polling; anything heavier would be another dependency to audit.  Every path
under `/v1/` is protected by the shared token; `/healthz` and `/metrics` are not (they carry no
secrets and must answer probes that have no token).
"""
from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Optional
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
MAX_BODY = 1 << 20  # a node report is a few KiB; refuse anything absurd before reading it
IDLE_TIMEOUT = 120.0  # drop idle keep-alive connections eventually


@dataclass(frozen=True)
class Request:
    """What a handler sees: method, path, query (last value per key), headers, parsed JSON body."""
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    client: str = ""


# A handler returns (status, body, content_type).  A body that is not bytes/str/None is sent as
# JSON; content_type None means application/json.
Response = tuple[int, Any, Optional[str]]
Handler = Callable[[Request], Response]
Routes = Mapping[tuple[str, str], Handler]


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIX)


class HttpService:
    """Serves `routes` ({(method, path): handler}) on `address` from a background thread."""

    def __init__(self, address: tuple[str, int], routes: Routes, token: Optional[str]):
        if token is None and any(is_protected(path) for _, path in routes):
            raise ValueError(f"routes under {PROTECTED_PREFIX} need a token")
        self._routes = dict(routes)
        self._token = token.encode() if token is not None else None
        self._server = _Server(address, _handler_class(self))
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "HttpService":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"http-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting, closes the socket and every open connection (keep-alive ones too)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()

    # -- called from handler threads ---------------------------------------------------------

    def auth_error(self, headers: Mapping[str, str]) -> Optional[str]:
        """None when the request carries the right bearer token, else what is wrong with it."""
        value = headers.get("Authorization")
        if not value:
            return "missing bearer token (Authorization: Bearer <token>)"
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "malformed Authorization header: expected 'Bearer <token>'"
        if self._token is None or not hmac.compare_digest(given.strip().encode(), self._token):
            return "wrong bearer token"
        return None

    def dispatch(self, request: Request) -> Response:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            allowed = sorted(m for m, p in self._routes if p == request.path)
            if allowed:
                return 405, {"error": f"{request.method} not allowed on {request.path}; use {', '.join(allowed)}"}, None
            return 404, {"error": f"no such path: {request.path}"}, None
        return handler(request)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler_class):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler_class)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def handle_error(self, request, client_address) -> None:
        """A peer that went away mid-request (an agent restarting during a long-poll) is
        normal: one log line, not socketserver's traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
            log.debug("connection from %s ended: %r", client_address, error)
        else:
            log.exception("request from %s failed", client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns, self._connections = list(self._connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _handler_class(service: HttpService) -> type:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so an agent's Session reuses its connection
        timeout = IDLE_TIMEOUT
        server_version = "ingressmesh"

        def setup(self) -> None:
            super().setup()
            self.server.track(self.connection, True)

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                self.server.track(self.connection, False)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            headers = {k: v for k, v in self.headers.items()}
            if is_protected(parts.path):
                problem = service.auth_error(self.headers)
                if problem is not None:
                    self._drain_body()
                    self._send(401, {"error": problem}, None, {"WWW-Authenticate": 'Bearer realm="ingressmesh"'})
                    return
            try:
                body = self._read_json()
            except _BadRequest as exc:
                self._send(exc.status, {"error": str(exc)}, None)
                return
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            request = Request(method, parts.path, query, headers, body, self.client_address[0])
            try:
                status, payload, content_type = service.dispatch(request)
            except Exception:
                log.exception("%s %s failed", method, parts.path)
                status, payload, content_type = 500, {"error": "internal error (see the server log)"}, None
            self._send(status, payload, content_type)

        def _read_json(self) -> Any:
            length_text = self.headers.get("Content-Length", "0") or "0"
            try:
                length = int(length_text)
            except ValueError:
                self.close_connection = True
                raise _BadRequest(400, f"bad Content-Length: {length_text!r}") from None
            if length > MAX_BODY:
                self.close_connection = True
                raise _BadRequest(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
            if length <= 0:
                return None
            raw = self.rfile.read(length)
            try:
                return json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                raise _BadRequest(400, f"malformed JSON body: {exc}") from None

        def _drain_body(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", "0") or "0")
            except ValueError:
                length = -1
            if 0 < length <= MAX_BODY:
                self.rfile.read(length)
            elif length != 0:
                self.close_connection = True

        def _send(self, status: int, payload: Any, content_type: Optional[str],
                  extra: Optional[Mapping[str, str]] = None) -> None:
            if status in (204, 304) or payload is None:
                data = b""
            elif isinstance(payload, bytes):
                data = payload
            elif isinstance(payload, str):
                data = payload.encode()
            else:
                data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                if data or status not in (204, 304):
                    self.send_header("Content-Type", content_type or "application/json")
                if status not in (204, 304):
                    self.send_header("Content-Length", str(len(data)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if data and status not in (204, 304):
                    self.wfile.write(data)
            except OSError as exc:  # the client went away (or stop() closed the connection)
                self.close_connection = True
                log.debug("response %s to %s not sent: %s", status, self.client_address[0], exc)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.client_address[0], *args)

    return _Handler


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
