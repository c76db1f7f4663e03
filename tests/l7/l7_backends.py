"""Real HTTP backends on loopback for the L7 tests: task N answers on 127.0.0.N:port with JSON
naming itself, the path it saw and the headers it got."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):  # /slow?SECONDS: an in-flight request that takes a while
            time.sleep(min(float(self.path.partition("?")[2] or 1), 10))
        body = json.dumps({"backend": self.server.name, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Backends:
    def __init__(self):
        self.servers: dict[str, ThreadingHTTPServer] = {}

    def start(self, name: str, address: str, port: int) -> None:
        server = ThreadingHTTPServer((address, port), _Echo)
        server.daemon_threads = True
        server.name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[name] = server

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()
