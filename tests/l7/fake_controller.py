"""A stand-in for the controller's snapshot API on loopback (GET /v1/snapshot long-poll with the
bearer token), so the real `ingressmesh proxy` process can be tested without a swarm."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeController:
    def __init__(self, token: str, port: int = 0):
        self.token, self.version, self.cluster = token, 0, {}
        self.connections: set = set()  # open client connections: an outage cuts them, as a dead process would
        self.changed = threading.Condition()
        controller = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                super().setup()
                controller.connections.add(self.connection)

            def finish(self):
                controller.connections.discard(self.connection)
                super().finish()

            def do_GET(self):  # noqa: N802
                if self.headers.get("Authorization") != f"Bearer {controller.token}":
                    return self._send(401, {"error": "bad token"})
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                since, wait = int(query.get("since", "0")), min(float(query.get("wait", "0")), 30)
                with controller.changed:
                    controller.changed.wait_for(lambda: controller.version != since, timeout=wait)
                    version, cluster = controller.version, controller.cluster
                if version == since:
                    return self._send(304, None)
                self._send(200, {"version": version, "cluster": cluster})

            def _send(self, status, body):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def publish(self, cluster: dict) -> int:
        with self.changed:
            self.version += 1
            self.cluster = cluster
            self.changed.notify_all()
            return self.version

    def close(self) -> None:
        """Like a controller that died: stop listening and cut every open connection (a
        long-poll in flight included), instead of letting waiting handlers answer later."""
        self.server.shutdown()
        self.server.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
