"""The proxy's listening sockets, opened and held by the proxy process, not by HAProxy.

Each HAProxy the proxy starts inherits them (`bind fd@N`): while HAProxy is restarted after a
crash or a `kill -9` the sockets stay open and listening, so the kernel completes and queues new
connections until the next HAProxy accepts them instead of refusing them (issue 20: ~0.8 s of
refused connections through every entry node).  Reloads keep working as before: the master
re-executes itself with the same inherited descriptors.
"""
from __future__ import annotations

import socket
from typing import Iterable


class ListenError(OSError):
    """A port could not be bound (named in the message)."""


class Listeners:
    def __init__(self, address: str, ports: Iterable[int], backlog: int = 4096):
        self.sockets: dict[int, socket.socket] = {}
        try:
            for port in sorted({int(p) for p in ports if p}):
                sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
                self.sockets[port] = sock
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                except OSError as err:
                    raise ListenError(f"cannot listen on {address}:{port}: {err.strerror}") from None
                sock.listen(backlog)
                sock.set_inheritable(True)
        except BaseException:
            self.close()
            raise

    def fds(self) -> tuple[tuple[int, int], ...]:
        """((port, file descriptor), ...) for ProxySettings.listen_fds."""
        return tuple((port, sock.fileno()) for port, sock in sorted(self.sockets.items()))

    def close(self) -> None:
        """The ports stop listening for every holder (HAProxy's master keeps its inherited copy until
        it exits: without the shutdown, new connections would queue, unanswered, through the whole
        drain) and refuse new connections; connections already accepted are not touched."""
        for sock in self.sockets.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not listening any more
            sock.close()
        self.sockets = {}
