"""The PROXY protocol v2 for the tests (haproxy.org/download/2.6/doc/proxy-protocol.txt, section 2.2):
a header builder (what an L4 balancer in front of the proxies sends) and a backend that reads the
header HAProxy's `send-proxy-v2` puts before each connection, records the client address it
carries and answers one HTTP request with it.  Only the TCP over IPv4 shape, the one used here."""
from __future__ import annotations

import ipaddress
import json
import socket
import struct
import threading

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_COMMAND, LOCAL_COMMAND = 0x21, 0x20  # version 2 + command
TCP4 = 0x11


def header(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    """A PROXY v2 header for a TCP over IPv4 connection from source to destination."""
    addresses = (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
                 + struct.pack("!HH", source_port, destination_port))
    return SIGNATURE + bytes([PROXY_COMMAND, TCP4]) + struct.pack("!H", len(addresses)) + addresses


def _read(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def read_header(conn: socket.socket) -> tuple[str, int]:
    """(client address, port) from the PROXY v2 header at the start of `conn`; ValueError when
    the connection does not start with one."""
    fixed = _read(conn, 16)
    if fixed[:12] != SIGNATURE:
        raise ValueError(f"no PROXY v2 signature: {fixed!r}")
    command, family, length = fixed[12], fixed[13], struct.unpack("!H", fixed[14:16])[0]
    rest = _read(conn, length)  # addresses, then TLVs (which HAProxy may add): skipped
    if command != PROXY_COMMAND or family != TCP4 or length < 12:
        raise ValueError(f"not a PROXY TCP4 header: command {command:#x}, family {family:#x}, length {length}")
    return str(ipaddress.IPv4Address(rest[:4])), struct.unpack("!H", rest[8:10])[0]


class ProxyV2Backend:
    """A task whose app speaks PROXY v2: each connection must open with the header; it answers
    one HTTP request with JSON naming itself and the client the header carried (and records it)."""

    def __init__(self, name: str, address: str, port: int):
        self.name, self.seen, self.errors = name, [], []
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            try:
                client = read_header(conn)
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 16384:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
            except (OSError, ValueError) as err:
                self.errors.append(str(err))
                return
            self.seen.append(client)
            body = json.dumps({"backend": self.name, "proxy_v2_client": client[0],
                               "request": request.split(b"\r\n", 1)[0].decode(errors="replace")}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def shutdown(self) -> None:
        self.stopping.set()

    def server_close(self) -> None:
        self.sock.close()
