#!/usr/bin/python3
"""HTTP server baked into the lab's python image (python3-minimal: stdlib without http.server).

GET /        -> this container's hostname (which task answered); every answer also carries
                the path it saw (X-Path) and the proxy headers it got (X-Seen-<header>)
GET /health  -> 200 "ok", or 503 "draining" once SIGTERM arrived
On SIGTERM it keeps serving for $LINGER seconds (default 3), then exits 0, like an app that
drains gracefully. `hostname-server --check` probes /health on 127.0.0.1 (for --health-cmd).
Runs standalone in the image: imports nothing from ingressmesh.
"""
import os
import signal
import socket
import sys
import threading
import time

PORT = int(os.environ.get("PORT", "80"))
LINGER = float(os.environ.get("LINGER", "3"))
HOSTNAME = socket.gethostname()


ECHOED = ("x-forwarded-for", "x-forwarded-proto", "x-real-ip", "x-request-id")


def reply(conn, status, body, draining, seen=""):
    head = (f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\nX-Hostname: {HOSTNAME}\r\n{seen}"
            f"X-Draining: {'yes' if draining.is_set() else 'no'}\r\n\r\n")
    conn.sendall(head.encode() + body)


def echoed(data, path):
    """X-Path and X-Seen-* lines: what the app was sent (printable ASCII only, cut short)."""
    lines = [("X-Path", path)]
    for line in data.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ECHOED:
            lines.append(("X-Seen-" + name.strip(), value.strip()))
    return "".join(f"{k}: {''.join(c for c in v if 32 <= ord(c) < 127)[:200]}\r\n" for k, v in lines)


def handle(conn, draining):
    with conn:
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            parts = data.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) > 2 else "/"
            if path.split("?")[0] == "/health":
                if draining.is_set():
                    reply(conn, "503 Service Unavailable", b"draining\n", draining)
                else:
                    reply(conn, "200 OK", b"ok\n", draining)
            else:
                reply(conn, "200 OK", (HOSTNAME + "\n").encode(), draining, echoed(data, path))
        except OSError:
            pass


def check():
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as conn:
            conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            return 0 if conn.recv(64).split(b" ")[1:2] == [b"200"] else 1
    except (OSError, IndexError):
        return 1


def serve():
    draining = threading.Event()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", PORT))
    listener.listen(128)
    listener.settimeout(0.2)

    def on_term(signum, _frame):
        print(f"{HOSTNAME}: signal {signum}, serving {LINGER}s more", file=sys.stderr, flush=True)
        draining.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print(f"{HOSTNAME}: serving on :{PORT}", file=sys.stderr, flush=True)
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        if deadline is None and draining.is_set():
            deadline = time.monotonic() + LINGER
        try:
            conn, _addr = listener.accept()
        except (socket.timeout, InterruptedError):
            continue
        threading.Thread(target=handle, args=(conn, draining), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(check() if sys.argv[1:] == ["--check"] else serve())
