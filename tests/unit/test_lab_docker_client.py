"""The lab's docker SDK clients never negotiate their API version: each GET /version makes
dockerd 20.10 run `runc --version` and `docker-init --version`, which under emulation kept the
guest's dockerds busy while the tests polled with a new client every 0.2 s."""
import http.server
import os
import socketserver
import threading

from ingressmesh.lab import Lab, LabConfig
from ingressmesh.lab.config import LAB_API_VERSION


class RecordingDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A stand-in dockerd on a unix socket: answers every GET with `{}` and keeps the paths."""
    daemon_threads = True

    def __init__(self, path: str):
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                outer.paths.append(self.path)
                body = b"OK" if self.path.endswith("/_ping") else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Api-Version", LAB_API_VERSION)
                self.end_headers()
                self.wfile.write(body)

            def address_string(self):
                return "unix"

            def log_message(self, *args):
                pass
        super().__init__(path, Handler)


def test_a_lab_client_talks_at_the_lab_api_version_without_asking_for_it(tmp_path):
    lab = Lab(LabConfig(lab_dir=str(tmp_path), nodes=1))
    socket_path = lab.config.docker_sock(1)
    os.makedirs(os.path.dirname(socket_path))
    server = RecordingDaemon(socket_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = lab.docker_client(1)
        try:
            client.api.inspect_service("web")
        finally:
            client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert server.paths == [f"/v{LAB_API_VERSION}/services/web"], server.paths
    assert not any(path.endswith("/version") for path in server.paths)
