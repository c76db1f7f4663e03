"""HAProxy's runtime API (the admin and master sockets): endpoint changes without a reload.

Each command's reply is checked against what success looks like; anything else raises
RuntimeApiError, and the caller falls back to a reload (which rebuilds the state from the
config) instead of drifting (haproxy-ingress #807).
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Mapping, Optional

from ..plan import ACTIVE
from .render import STATS_FRONTEND, check_safe
from .slots import Assignment, Pool, slot_name

_ADDR_OK = ("IP changed from", "no need to change the addr", "port changed from")


class RuntimeApiError(RuntimeError):
    """A runtime command failed or answered something unexpected."""


def send(path: str, command: str, timeout: float = 5.0) -> str:
    """One command on a stats/master socket; the whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as err:
            raise RuntimeApiError(f"{path}: {command.split()[0]}: {err}") from None
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class Change:
    """One slot's move from what it held to what it should hold."""
    backend: str
    index: int
    server: Optional[object]  # routes.Server or None (slot freed)

    def commands(self) -> list[tuple[str, tuple[str, ...]]]:
        """(command, accepted reply starts; () means an empty reply) in the order that never
        opens a window: address first, then weight, then the state that lets traffic in."""
        target = f"{check_safe(self.backend, 'backend')}/{slot_name(self.index)}"
        if self.server is None:
            return [(f"set server {target} state maint", ())]
        weight = 1 if self.server.state == ACTIVE else 0
        address = check_safe(self.server.address, "address")
        return [(f"set server {target} addr {address} port {int(self.server.port)}", _ADDR_OK),
                (f"set weight {target} {weight}", ()),
                (f"set server {target} state ready", ())]


def changes(old: Mapping[str, Pool], new: Assignment) -> list[Change]:
    """Slot changes between two assignments of the same backends and pool sizes."""
    found = []
    for backend, pool in sorted(new.items()):
        before = old.get(backend, ())
        for index, server in enumerate(pool):
            previous = before[index] if index < len(before) else None
            if server != previous and not _same_endpoint(server, previous):
                found.append(Change(backend, index, server))
    return found


def _same_endpoint(a, b) -> bool:
    """Equal for HAProxy: same address, port and weight (task ids and health are our notes)."""
    if a is None or b is None:
        return a is b
    return (a.address, a.port, a.state) == (b.address, b.port, b.state)


def apply_changes(socket_path: str, found: list[Change]) -> int:
    """Sends every change; the number of commands sent.  Raises RuntimeApiError at the first
    reply that is not a success."""
    sent = 0
    for change in found:
        for command, accepted in change.commands():
            reply = send(socket_path, command).strip()
            sent += 1
            if (reply != "") if not accepted else not reply.startswith(accepted):
                raise RuntimeApiError(f"{command!r} answered {reply[:200]!r}")
    return sent


def apply_commands(socket_path: str, commands: list[str]) -> int:
    """Commands whose success is an empty reply (map edits); raises RuntimeApiError otherwise."""
    for command in commands:
        reply = send(socket_path, command).strip()
        if reply:
            raise RuntimeApiError(f"{command!r} answered {reply[:200]!r}")
    return len(commands)


def servers_state(socket_path: str) -> list[dict]:
    """`show servers state` as dicts (backend, server, address, port, op_state, admin_state, weight)."""
    lines = send(socket_path, "show servers state").splitlines()
    header = next((line[2:].split() for line in lines if line.startswith("# be_id")), None)
    if header is None:
        raise RuntimeApiError(f"show servers state: unexpected reply {lines[:2]!r}")
    rows = []
    for line in lines:
        fields = line.split()
        if line.startswith("#") or len(fields) != len(header):
            continue
        row = dict(zip(header, fields))
        rows.append({"backend": row["be_name"], "server": row["srv_name"], "address": row["srv_addr"],
                     "port": int(row["srv_port"]), "op_state": int(row["srv_op_state"]),
                     "admin_state": int(row["srv_admin_state"]), "weight": int(row["srv_uweight"])})
    return rows


def _stat_rows(socket_path: str, kind: int, timeout: float = 5.0) -> list[dict]:
    """`show stat` rows of one object kind (1 frontends, 4 servers) as dicts by column name."""
    lines = send(socket_path, f"show stat -1 {kind} -1", timeout=timeout).splitlines()
    if not lines or not lines[0].startswith("# pxname"):
        raise RuntimeApiError(f"show stat: unexpected reply {lines[:1]!r}")
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def accepted_connections(socket_path: str, timeout: float = 5.0) -> int:
    """Connections every frontend but the stats one has accepted so far (`show stat` conn_tot,
    counted at accept, before a TLS handshake or a PROXY header): whether clients still arrive.
    Per worker: a reload starts it again from 0."""
    counts = [row.get("conn_tot", "") for row in _stat_rows(socket_path, 1, timeout)
              if row.get("svname") == "FRONTEND" and row.get("pxname") != STATS_FRONTEND]
    if not counts or not all(count.isdigit() for count in counts):
        raise RuntimeApiError(f"show stat: no connection count for the frontends: {counts!r}")
    return sum(int(count) for count in counts)


def current_sessions(socket_path: str) -> dict[tuple[str, str], int]:
    """Current sessions per (backend, server), from `show stat`."""
    return {(row["pxname"], row["svname"]): int(row["scur"]) for row in _stat_rows(socket_path, 4)
            if row.get("svname") and row.get("scur", "").isdigit()}
