#!/usr/bin/python3
"""Stand-ins for the app images Interlock's documentation runs, baked into lab images named like
them (standin_images.py): no registry is reachable from the lab.  One program, the app chosen by
the first argument; python3-minimal has no http.server (nor json), so plain sockets, one thread per
connection, every answer `Connection: close`.

docker-demo     (ehazlett/docker-demo, :8080) GET /ping -> JSON {"instance": hostname,
                "version": $VERSION or "0.1", "metadata": $METADATA (when set), "request_id": the
                X-Request-Id the proxy sent}; GET / -> an HTML page saying the same; every answer
                sets cookie `session` (the one the request carried, else a new one), as the real
                app does; other paths 404.  `--tls-cert=F --tls-key=F` (the docs' passthrough
                stack): TLS only.
websocket-chat  (ehazlett/websocket-chat, :8080) GET / -> the chat page; a websocket on /ws:
                every text frame a client sends goes to every client connected to this task.
default-app     (ehazlett/interlock-default-app, :80 and :8080: the docs use both) any path -> a
                "no such page" HTML page, 200, naming this task.
whoami          (traefik/whoami, :80) any path -> `Hostname: …`, the caller's address, the
                request line and its headers, as text.

SIGTERM exits at once.  The HTTP and websocket helpers come from hostname_server.py (copied next
to this file into the image)."""
import os
import signal
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostname_server import WS_GUID, header, recv_exactly  # noqa: E402  (same image, same dir)

HOSTNAME = socket.gethostname()
PORTS = {"docker-demo": (8080,), "websocket-chat": (8080,), "default-app": (80, 8080), "whoami": (80,)}
CHAT_PAGE = ("<!DOCTYPE html><html><head><title>websocket chat</title></head><body><h1>chat on HOST"
             "</h1><ul id=log></ul><input id=msg><script>var ws=new WebSocket('ws://'+location.host+'/ws');"
             "ws.onmessage=function(e){var li=document.createElement('li');li.textContent=e.data;"
             "document.getElementById('log').appendChild(li)};document.getElementById('msg').onchange="
             "function(e){ws.send(e.target.value);e.target.value=''}</script></body></html>\n")


def answer(conn, status, body, content_type="text/plain; charset=utf-8", extra=""):
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n")
    conn.sendall(head.encode("latin-1") + body)


def to_json(info):
    """A flat object of strings as JSON (python3-minimal has no json module)."""
    def quoted(text):
        escaped = "".join(c if c not in '"\\' and ord(c) >= 32 else f"\\u{ord(c):04x}" for c in text)
        return f'"{escaped}"'
    return "{" + ", ".join(f"{quoted(k)}: {quoted(v)}" for k, v in info.items()) + "}"


def session_cookie(request):
    """The `session` cookie the request carried, else a new one (docker-demo sets it each time)."""
    for part in header(request, "cookie").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session" and value:
            return value
    return str(time.time_ns())


def docker_demo(conn, request, path):
    info = {"instance": HOSTNAME, "version": os.environ.get("VERSION", "0.1")}
    if os.environ.get("METADATA"):
        info["metadata"] = os.environ["METADATA"]
    info["request_id"] = header(request, "x-request-id")
    cookie = f"Set-Cookie: session={session_cookie(request)}; Path=/; Max-Age=86400\r\n"
    route = path.split("?")[0]
    if route == "/ping":
        answer(conn, "200 OK", to_json(info).encode(), extra=cookie)
    elif route == "/":
        rows = "".join(f"<li>{key}: {value}</li>" for key, value in info.items())
        answer(conn, "200 OK", f"<html><body><h1>docker-demo</h1><ul>{rows}</ul></body></html>\n".encode(),
               "text/html; charset=utf-8", cookie)
    else:
        answer(conn, "404 Not Found", b"404 page not found\n", extra=cookie)


class Chat:
    """The websocket clients of this task; a text frame from one goes to all of them."""

    def __init__(self):
        self.lock, self.clients = threading.Lock(), []

    def send_all(self, payload):
        frame = bytes([0x81, len(payload)]) + payload if len(payload) < 126 else \
            bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload
        with self.lock:
            for client in list(self.clients):
                try:
                    client.sendall(frame)
                except OSError:
                    self.clients.remove(client)

    def serve(self, conn, request):
        import base64
        import hashlib
        accept = base64.b64encode(hashlib.sha1(header(request, "sec-websocket-key").encode() + WS_GUID).digest())
        with self.lock:  # before the 101: a client that has its answer gets every line sent after
            self.clients.append(conn)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        conn.settimeout(600)
        try:
            for _ in range(100000):
                first, second = recv_exactly(conn, 2)
                if first & 0x0F == 0x8 or second & 0x7F > 125:  # close, or longer than a chat line
                    return
                mask = recv_exactly(conn, 4) if second & 0x80 else b"\0\0\0\0"
                self.send_all(bytes(b ^ mask[i % 4] for i, b in enumerate(recv_exactly(conn, second & 0x7F))))
        finally:
            with self.lock:
                if conn in self.clients:
                    self.clients.remove(conn)


def handle(app, chat, raw, context):
    conn = raw
    try:
        peer = "%s:%s" % raw.getpeername()[:2]
        raw.settimeout(10)
        if context is not None:
            conn = context.wrap_socket(raw, server_side=True)
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        path = parts[1] if len(parts) == 3 else "/"
        if app == "docker-demo":
            docker_demo(conn, request, path)
        elif app == "websocket-chat":
            if path.split("?")[0] == "/ws" and header(request, "upgrade").lower() == "websocket":
                chat.serve(conn, request)
            else:
                answer(conn, "200 OK", CHAT_PAGE.replace("HOST", HOSTNAME, 1).encode(), "text/html; charset=utf-8")
        elif app == "default-app":
            answer(conn, "200 OK", f"<html><body><h1>interlock default app</h1><p>The page you asked for is "
                   f"not configured here.</p><p>instance {HOSTNAME}</p></body></html>\n".encode(),
                   "text/html; charset=utf-8")
        else:  # whoami
            head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            text = "\n".join([f"Hostname: {HOSTNAME}", f"RemoteAddr: {peer}", *head]) + "\n"
            answer(conn, "200 OK", text.encode("latin-1"))
    except (OSError, ValueError):
        pass
    finally:
        conn.close()
        raw.close()


def tls_context(args):
    """--tls-cert=F --tls-key=F (docker-demo's flags in the docs' passthrough stack), else None."""
    flags = dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)
    unknown = set(flags) - {"tls-cert", "tls-key"}
    if unknown or len(flags) == 1:
        sys.exit(f"usage: docker-demo [--tls-cert=FILE --tls-key=FILE] (got {' '.join(args)})")
    if not flags:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(flags["tls-cert"], flags["tls-key"])
    return context


def main(argv):
    if not argv or argv[0] not in PORTS:
        sys.exit(f"usage: interlock_apps.py {{{'|'.join(PORTS)}}} [args]")
    app, context, chat = argv[0], tls_context(argv[1:]), Chat()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listeners = []
    for port in PORTS[app]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(128)
        listeners.append(listener)
    print(f"{HOSTNAME}: {app} on {', '.join(map(str, PORTS[app]))}{' (TLS)' if context else ''}",
          file=sys.stderr, flush=True)

    def accept(listener):
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(app, chat, conn, context), daemon=True).start()
    for listener in listeners[1:]:
        threading.Thread(target=accept, args=(listener,), daemon=True).start()
    accept(listeners[0])


if __name__ == "__main__":
    main(sys.argv[1:])
