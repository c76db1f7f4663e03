"""Fixed pools of server slots per backend, assigned so that task churn needs no reload.

A backend's servers live in slots s1..sN (N a multiple of BLOCK).  A server keeps the slot that
already holds its address:port, new servers take free slots, and N only grows — the one change
here that needs a reload.  The same assignment is written into every config, so a reload
reproduces the runtime state exactly.
"""
from __future__ import annotations

from typing import Mapping, Optional

from .routes import RouteTable, Server

BLOCK = 16

Pool = tuple[Optional[Server], ...]
Assignment = dict[str, Pool]


def _size(needed: int, current: int, block: int) -> int:
    size = max(current, block)
    while size < needed:
        size += block
    return size


def assign(previous: Mapping[str, Pool], table: RouteTable, block: int = BLOCK) -> Assignment:
    """Slots for every backend of `table`, keeping what `previous` had where it can."""
    result: Assignment = {}
    for backend in table.backends:
        old = previous.get(backend.name, ())
        pool: list[Optional[Server]] = [None] * _size(len(backend.servers), len(old), block)
        where = {(s.address, s.port): i for i, s in enumerate(old) if s is not None}
        placed = set()
        for server in backend.servers:
            index = where.get((server.address, server.port))
            if index is not None and pool[index] is None:
                pool[index] = server
                placed.add(server)
        free = (i for i, s in enumerate(pool) if s is None and (i >= len(old) or old[i] is None))
        reused = (i for i, s in enumerate(pool) if s is None and i < len(old) and old[i] is not None)
        for server in backend.servers:
            if server not in placed:
                index = next(free, None)
                pool[index if index is not None else next(reused)] = server
        result[backend.name] = tuple(pool)
    return result


def pool_sizes(assignment: Mapping[str, Pool]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((name, len(pool)) for name, pool in assignment.items()))


def slot_name(index: int) -> str:
    return f"s{index + 1}"
