"""Connection budgets of the daemons' HTTP server: idle sockets must not lock the agents out.

Anyone who reaches the port can open connections; only the agents, proxies and CLI hold a
credential.  So a connection is *pending* until a request on it presents a valid credential
(a /v1/ path), then *trusted*, and the budgets (http_limits.Limits) treat the two apart:

- a pending connection has `head_timeout` (5 s) from its accept to present a credential, then it
  is closed, whatever it sent;
- at most `max_pending_per_client` (16) pending connections per client address and
  `max_pending` (256) in all: a connection beyond these evicts a *silent* pending one (it never
  sent a byte, nothing is unread in its socket, and it is older than `pending_grace`, 1 s, so a
  client that connected and is about to send is not cut), oldest first, of the same address or
  of the address holding the most pending connections.  A pending connection that sent something (its
  request is being read or answered) is not evicted for these: a burst of real clients is served,
  not cut, and the head deadline bounds it;
- at most `max_per_client` (512) connections of any kind per address and `max_connections`
  (1024) in all: beyond, a pending connection is evicted (silent ones first), else the newcomer
  is answered 503;
- trusted connections (the agents' long-polls and reports) are never evicted.

So 2,000 idle sockets from one address cost that address's 16 pending slots (and 2,000 sockets
from several addresses, 256), never the agents' open connections, and an agent's new
connection, which sends its request at once, gets in past them.
"""
from __future__ import annotations

import array
import asyncio
import collections
import fcntl
import logging
import termios
from typing import Callable, Optional

from .http_limits import Busy, Limits

log = logging.getLogger(__name__)


def _client(transport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"


def _unread(transport) -> int:
    """Bytes the peer sent that nobody read yet (FIONREAD); 0 when unknown."""
    sock = transport.get_extra_info("socket")
    try:
        waiting = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
        return waiting[0]
    except (OSError, AttributeError, ValueError):
        return 0


class ConnectionGate:
    """Admits, trusts and releases connections; lives on the server's loop (no locks)."""

    def __init__(self, limits: Limits, loop: asyncio.AbstractEventLoop):
        self.limits, self._loop = limits, loop
        self._pending: dict = {}  # client -> OrderedDict(transport -> deadline handle)
        self._count: collections.Counter = collections.Counter()  # client -> connections of any kind
        self._client_of: dict = {}  # transport -> client
        self._spoke: set = set()  # pending transports that sent something (a request in the works)
        self._pending_total = 0
        self.evicted = 0
        self.refused = 0

    @property
    def connections(self) -> int:
        return len(self._client_of)

    @property
    def pending(self) -> int:
        return self._pending_total

    def admit(self, transport) -> bool:
        """Takes `transport` in as pending (evicting others if a budget says so), or False: refuse it."""
        limits, client = self.limits, _client(transport)
        if self._count[client] >= limits.max_per_client and not self._evict(client, any_pending=True):
            return self._refuse(client, "its address holds the most connections one address may")
        if self.connections >= limits.max_connections and not self._evict(None, any_pending=True):
            return self._refuse(client, "every connection is taken by authenticated clients")
        if len(self._pending.get(client, ())) >= limits.max_pending_per_client:
            self._evict(client)
        if self._pending_total >= limits.max_pending:
            self._evict(None)
        timeout = min(limits.head_timeout, limits.header_timeout)
        handle = self._loop.call_later(timeout, self._expire, transport)
        self._pending.setdefault(client, collections.OrderedDict())[transport] = (handle, self._loop.time())
        self._pending_total += 1
        self._count[client] += 1
        self._client_of[transport] = client
        return True

    def spoke(self, transport) -> None:
        """`transport` sent bytes: its request is being read or handled, it is not idle."""
        if transport in self._client_of:
            self._spoke.add(transport)

    def trust(self, transport) -> None:
        """A request on `transport` presented a valid credential: never evicted or timed out here."""
        self._unpend(transport)

    def release(self, transport) -> None:
        """The connection is gone."""
        self._unpend(transport)
        self._spoke.discard(transport)
        client = self._client_of.pop(transport, None)
        if client is not None:
            self._count[client] -= 1
            if self._count[client] <= 0:
                del self._count[client]

    def _unpend(self, transport) -> None:
        client = self._client_of.get(transport)
        queue = self._pending.get(client)
        if queue is None or transport not in queue:
            return
        queue.pop(transport)[0].cancel()
        self._pending_total -= 1
        if not queue:
            del self._pending[client]

    def _expire(self, transport) -> None:
        client = self._client_of.get(transport)
        if client is not None and transport in self._pending.get(client, ()):
            log.debug("connection from %s sent no authenticated request within %g s: closed", client,
                      min(self.limits.head_timeout, self.limits.header_timeout))
            self._close(transport)

    def _evict(self, client: Optional[str], any_pending: bool = False) -> bool:
        """Closes one silent pending connection (of `client`, or of the clients holding the most
        pending first); with `any_pending`, the oldest pending one when none is silent."""
        clients = [client] if client is not None else sorted(self._pending, key=lambda c: -len(self._pending[c]))
        settled = self._loop.time() - self.limits.pending_grace
        for who in clients:
            for transport, (_, admitted) in list(self._pending.get(who, {}).items()):
                if admitted > settled:
                    break  # this one and all later ones may still be about to send their request
                if transport not in self._spoke and _unread(transport) == 0:
                    return self._evicted(transport)
        if any_pending:
            for who in clients:
                queue = self._pending.get(who)
                if queue:
                    return self._evicted(next(iter(queue)))
        return False

    def _evicted(self, transport) -> bool:
        self.evicted += 1
        self._close(transport)
        return True

    def _close(self, transport) -> None:
        self._unpend(transport)
        self.release(transport)  # counted out now: its connection_lost comes later
        transport.abort()

    def _refuse(self, client: str, why: str) -> bool:
        self.refused += 1
        log.info("connection from %s refused (503): %s", client, why)
        return False


class GatedProtocol(asyncio.Protocol):
    """Puts one connection through the gate, then hands it to the HTTP protocol (or Busy).  The
    HTTP protocol is made at the first byte: an idle socket costs this small object only."""

    def __init__(self, gate: ConnectionGate, make: Callable[[], asyncio.Protocol]):
        self._gate, self._make = gate, make
        self._inner: Optional[asyncio.Protocol] = None
        self._admitted = False
        self._transport = None

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._admitted = self._gate.admit(transport)
        if not self._admitted:
            self._inner = Busy()
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._transport.is_closing():
                return  # evicted or timed out between the bytes and now
            self._inner = self._make()
            self._inner.connection_made(self._transport)
        if self._admitted:
            self._gate.spoke(self._transport)
        self._inner.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._gate.release(self._transport)
        if self._inner is not None:
            self._inner.connection_lost(exc)
