"""A minimal websocket client and framing (RFC 6455) for the tests: short text frames only,
enough to check an upgrade through the proxy and that an open connection keeps echoing."""
from __future__ import annotations

import base64
import hashlib
import os
import socket

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_frame(payload: bytes, mask: bool) -> bytes:
    """One final text frame (payloads under 126 bytes); clients mask, servers do not."""
    head = bytes([0x81, (0x80 if mask else 0) | len(payload)])
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """n bytes, or b'' when the peer closed first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def ws_read(sock: socket.socket) -> bytes:
    """One frame's payload (up to 16-bit lengths); b'' when the peer closed."""
    head = recv_exactly(sock, 2)
    if not head:
        return b""
    length, masked = head[1] & 0x7F, head[1] & 0x80
    if length == 126:
        length = int.from_bytes(recv_exactly(sock, 2), "big")
    key = recv_exactly(sock, 4) if masked else b""
    payload = recv_exactly(sock, length)
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if masked else payload


def upgrade(sock: socket.socket, host: str, path: str) -> dict:
    """The client side of the handshake on a connected socket; the 101 answer's headers.
    Raises OSError naming what came back instead."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        chunk = sock.recv(1)  # byte by byte: nothing of the first frame may be consumed here
        if not chunk:
            raise OSError(f"closed during the websocket handshake: {head[:80]!r}")
        head += chunk
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise OSError(f"no websocket upgrade: {lines[0]!r}")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:] if line)}
    if headers.get("sec-websocket-accept") != ws_accept(key):
        raise OSError("wrong Sec-WebSocket-Accept")
    return headers


def echo(sock: socket.socket, text: str) -> str:
    """Sends one text frame and returns the one frame that comes back."""
    sock.sendall(ws_frame(text.encode(), mask=True))
    return ws_read(sock).decode(errors="replace")
