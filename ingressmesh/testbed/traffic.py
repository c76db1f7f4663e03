"""Real traffic from inside a testbed namespace: every call is bounded in count and time.

Sockets are created while this thread is inside the client namespace (setns is per thread),
so they belong to that namespace for their whole life and can be used from anywhere after.
"""
from __future__ import annotations

import socket
import time
from collections import Counter

from ..netns import Netns

TIMEOUT = 3.0


def open_tcp(ns: str, address: str, port: int, timeout: float = TIMEOUT) -> tuple[socket.socket, str]:
    """Connect and read the greeting; returns (socket, name of the task that answered)."""
    with Netns.from_ref(ns).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    try:
        return sock, _read_line(sock)
    except BaseException:
        sock.close()
        raise


def _read_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
        if len(data) > 4096:
            raise ConnectionError("line too long")
    return data.decode().strip()


def exchange(sock: socket.socket, text: str) -> str:
    """Send a line on an open connection and return the answer line."""
    sock.sendall(text.encode() + b"\n")
    return _read_line(sock)


def tcp_who(ns: str, address: str, port: int) -> str:
    sock, name = open_tcp(ns, address, port)
    sock.close()
    return name


def tcp_peer(ns: str, address: str, port: int) -> tuple[str, str]:
    """(task that answered, the caller's address as that task sees it)."""
    sock, name = open_tcp(ns, address, port)
    with sock:
        answer = exchange(sock, "peer?").split()
    return name, answer[-1]


def tcp_spread(ns: str, address: str, port: int, count: int) -> Counter:
    """Open `count` new connections and count which task answered each."""
    return Counter(tcp_who(ns, address, port) for _ in range(count))


def udp_who(ns: str, address: str, port: int, payload: str = "ping", timeout: float = TIMEOUT) -> str:
    with Netns.from_ref(ns).entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.sendto(payload.encode(), (address, port))
        data, _ = sock.recvfrom(4096)
    name, _, echoed = data.decode().partition(" ")
    if echoed != payload:
        raise ConnectionError(f"unexpected UDP answer {data!r}")
    return name


def udp_peer(ns: str, address: str, port: int, timeout: float = TIMEOUT,
             source_port: int = 0) -> tuple[str, str]:
    """(task that answered, the sender's address as that task sees it), from a fresh socket:
    from `source_port` when given, since a port the kernel hands out again may still have a
    conntrack entry (30 s for UDP) that keeps its earlier path."""
    with Netns.from_ref(ns).entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        if source_port:
            sock.bind(("0.0.0.0", source_port))
        sock.sendto(b"peer?", (address, port))
        data, _ = sock.recvfrom(4096)
    fields = data.decode().split()
    if len(fields) != 3 or fields[1] != "peer":
        raise ConnectionError(f"unexpected UDP answer {data!r}")
    return fields[0], fields[2]


def udp_spread(ns: str, address: str, port: int, count: int) -> Counter:
    """Each datagram from a fresh socket (a new source port), so each is a new flow."""
    return Counter(udp_who(ns, address, port, f"ping{i}") for i in range(count))


def refusal_seconds(ns: str, address: str, port: int, timeout: float = TIMEOUT) -> tuple[str, float]:
    """Try a TCP connect that should be refused; returns (outcome, seconds it took)."""
    start = time.monotonic()
    try:
        sock, name = open_tcp(ns, address, port, timeout)
        sock.close()
        outcome = f"connected to {name}"
    except ConnectionRefusedError:
        outcome = "refused"
    except OSError as err:
        outcome = f"error: {err}"
    return outcome, time.monotonic() - start


def udp_refusal(ns: str, address: str, port: int, timeout: float = TIMEOUT) -> str:
    """A UDP datagram to a service with no task: 'refused' if ICMP unreachable comes back."""
    with Netns.from_ref(ns).entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.connect((address, port))  # connected, so ICMP errors are reported to us
        sock.send(b"ping")
        try:
            return f"answered: {sock.recv(4096)!r}"
        except ConnectionRefusedError:
            return "refused"
        except socket.timeout:
            return "timeout"
