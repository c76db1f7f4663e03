#!/usr/bin/python3
"""HTTP server baked into the lab's python image (python3-minimal: stdlib without http.server).

GET /        -> this container's hostname (which task answered); every answer also carries
                the path it saw (X-Path), the proxy headers it got (X-Seen-<header>) and the
                caller's address as this task sees it (X-Peer)
GET /health  -> 200 "ok", or 503 "draining" once SIGTERM arrived
GET /session -> like /, and sets cookie SID=<hostname> unless the request carries it (an app with
                sessions, for sticky-cookie tests)
Upgrade: websocket -> the handshake, then every text frame echoed as "<hostname>:<payload>"
With TLS_CERT and TLS_KEY (file paths, e.g. Docker secrets) it speaks TLS only (X-TLS: yes).
On SIGTERM it keeps serving for $LINGER seconds (default 3), then exits 0, like an app that
drains gracefully. `hostname-server --check` probes /health on 127.0.0.1 (for --health-cmd).
Runs standalone in the image: imports nothing from ingressmesh.
"""
import base64
import hashlib
import os
import signal
import socket
import ssl
import sys
import threading
import time

PORT = int(os.environ.get("PORT", "80"))
LINGER = float(os.environ.get("LINGER", "3"))
HOSTNAME = socket.gethostname()
TLS_CERT, TLS_KEY = os.environ.get("TLS_CERT", ""), os.environ.get("TLS_KEY", "")
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


ECHOED = ("x-forwarded-for", "x-forwarded-proto", "x-real-ip", "x-request-id")


def reply(conn, status, body, draining, seen=""):
    seen += f"X-TLS: {'yes' if isinstance(conn, ssl.SSLSocket) else 'no'}\r\n"
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


def header(data, name):
    for line in data.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("peer closed")
        data += chunk
    return data


def websocket_echo(conn, data):
    """RFC 6455 handshake, then short masked client frames echoed back (bounded)."""
    accept = base64.b64encode(hashlib.sha1(header(data, "sec-websocket-key").encode() + WS_GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    conn.settimeout(120)
    for _ in range(10000):
        first, second = recv_exactly(conn, 2)
        if first & 0x0F == 0x8 or second & 0x7F > 125:  # close, or longer than this echo takes
            return
        mask = recv_exactly(conn, 4) if second & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(recv_exactly(conn, second & 0x7F)))
        out = f"{HOSTNAME}:".encode() + payload
        conn.sendall(bytes([0x81, len(out)]) + out if len(out) < 126 else bytes([0x81, 126, 0, len(out)]) + out)


def handle(raw, draining, context):
    conn = raw
    try:
        try:
            peer = raw.getpeername()[0]  # before wrap_socket, which detaches `raw`
        except OSError:
            peer = "-"
        raw.settimeout(10)
        data = b""
        try:
            if context is not None:
                conn = context.wrap_socket(raw, server_side=True)
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
            elif header(data, "upgrade").lower() == "websocket":
                websocket_echo(conn, data)
            else:
                seen = echoed(data, path) + f"X-Peer: {peer}\r\n"
                if path.startswith("/session") and f"SID={HOSTNAME}" not in header(data, "cookie"):
                    seen += f"Set-Cookie: SID={HOSTNAME}; Path=/\r\n"
                reply(conn, "200 OK", (HOSTNAME + "\n").encode(), draining, seen)
        except (OSError, ValueError):
            pass
    finally:
        conn.close()
        raw.close()


def tls_context():
    if not (TLS_CERT and TLS_KEY):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS_CERT, TLS_KEY)
    return context


def check():
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as raw:
            conn = raw
            if TLS_CERT:
                client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # our own listener
                conn = client.wrap_socket(raw)
            conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            return 0 if conn.recv(64).split(b" ")[1:2] == [b"200"] else 1
    except (OSError, IndexError):
        return 1


def serve():
    draining = threading.Event()
    context = tls_context()
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
        threading.Thread(target=handle, args=(conn, draining, context), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(check() if sys.argv[1:] == ["--check"] else serve())
