"""Real HTTP backends on loopback for the L7 tests: task N answers on 127.0.0.N:port with JSON
naming itself, the path it saw, the headers it got and whether it came over TLS.  Optionally
the server speaks TLS itself, or is a websocket echo server."""
from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from ingressmesh.testbed.websocket import ws_accept, ws_frame, ws_read



def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports, chosen at random below the kernel's ephemeral range.
    From that range, any outgoing connection may take a port between this choice and HAProxy's
    bind (CI saw "Address already in use"); below it the kernel never hands one out.  All are
    held open until all are chosen, so none is given twice (HAProxy's SO_REUSEPORT would then
    bind its HTTP and HTTPS frontends to one port and split the connections between them)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
        ephemeral_low = int(handle.read().split()[0])
    pick = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        for _ in range(100 * count):
            if len(socks) == count:
                return [sock.getsockname()[1] for sock in socks]
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", pick.randrange(10000, ephemeral_low)))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
        raise OSError(f"no {count} free loopback ports below {ephemeral_low}")
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):  # /slow?SECONDS: an in-flight request that takes a while
            time.sleep(min(float(self.path.partition("?")[2] or 1), 10))
        body = json.dumps({"backend": self.server.name, "path": self.path,
                           "tls": isinstance(self.connection, ssl.SSLSocket),
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        # /session: an app with sessions: a request without this task's session gets a new one.
        if self.path.startswith("/session") and f"SID={self.server.name}" not in (self.headers.get("Cookie") or ""):
            self.send_header("Set-Cookie", f"SID={self.server.name}; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a peer that resets an idle keep-alive connection (a reload does) is not a test failure


class _TlsServer(_Server):
    """Handshakes in the request's own thread, so one slow client never blocks accept."""
    context: Optional[ssl.SSLContext] = None

    def get_request(self):
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class _WebsocketEcho:
    """A websocket server: the handshake, then every frame echoed back as '<name>:<payload>'."""

    def __init__(self, name: str, address: str, port: int):
        self.name, self.sock = name, socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        conn.settimeout(30)
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            headers = dict(line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line)
            key = {k.lower(): v for k, v in headers.items()}.get("sec-websocket-key", "")
            conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Accept: {ws_accept(key)}\r\n\r\n").encode())
            for _ in range(1000):
                payload = ws_read(conn)
                if not payload:
                    return
                conn.sendall(ws_frame(self.name.encode() + b":" + payload, mask=False))

    def shutdown(self):
        self.stopping.set()

    def server_close(self):
        self.sock.close()


class Backends:
    def __init__(self):
        self.servers: dict[str, object] = {}

    def start(self, name: str, address: str, port: int, tls: Optional[ssl.SSLContext] = None) -> None:
        if tls is None:
            server = _Server((address, port), _Echo)
        else:
            server = _TlsServer((address, port), _Echo)
            server.context = tls
        server.daemon_threads = True
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[name] = server

    def start_websocket(self, name: str, address: str, port: int) -> None:
        self.servers[name] = _WebsocketEcho(name, address, port)

    def start_proxy_v2(self, name: str, address: str, port: int) -> None:
        from proxy_v2 import ProxyV2Backend
        self.servers[name] = ProxyV2Backend(name, address, port)

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()
