"""nftables in-process: libnftables (`libnftables.so.1`, Debian's libnftables1) through ctypes.

The VIP fast path writes one small transaction into every container namespace per change.
`nft -f` costs a fork of the agent, an `nsenter` and an `nft` start per namespace (~25 ms,
bench/fast_path_fanout.py); here the calling thread enters the namespace with setns(2), runs
the same script through the library and goes back: no process at all.  One libnftables
context per namespace, created inside it, so its netlink socket belongs to that namespace;
every call still runs inside the namespace, so a socket the library reopens lands there too.
Implements the NftRunner protocol of backend.py (KernelNft is the `nft` process twin).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import threading
import weakref
from typing import Optional

from ..netns import Netns, NetnsError
from .errors import NftError
from .kernel import KernelNft
from .state import FAMILY, TABLE

CLONE_NEWNET = 0x40000000
OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON
OUTPUT_TERSE = 1 << 11  # NFT_CTX_OUTPUT_TERSE: set elements left out of listings


@functools.lru_cache(maxsize=None)
def _library():
    """libnftables and libc, loaded once (read-only afterwards); OSError when absent."""
    nft = ctypes.CDLL(ctypes.util.find_library("nftables") or "libnftables.so.1", use_errno=True)
    nft.nft_ctx_new.restype = ctypes.c_void_p
    nft.nft_ctx_new.argtypes = [ctypes.c_uint32]
    nft.nft_ctx_free.argtypes = [ctypes.c_void_p]
    nft.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    nft.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    nft.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    nft.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nft.nft_run_cmd_from_buffer.restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(nft, name).restype = ctypes.c_char_p
        getattr(nft, name).argtypes = [ctypes.c_void_p]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    return nft, libc


def available() -> bool:
    try:
        _library()
        return True
    except OSError:
        return False


def _setns(fd: int, what: str) -> None:
    if _library()[1].setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"setns into {what}: {os.strerror(err)}")


class _Entered:
    """This thread inside `path`'s network namespace for the body, then back where it was."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            os.close(self.saved)
            raise NetnsError(f"network namespace {self.path}: {err.strerror}") from None
        try:
            _setns(fd, self.path)
        except NetnsError:
            os.close(self.saved)
            raise
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            _setns(self.saved, "the thread's own namespace")  # failing here must not go unnoticed
        finally:
            os.close(self.saved)
        return False


class LibNft:
    """One namespace's nftables, in this process.  Not for concurrent use: one caller at a time
    (the lock makes a second one wait rather than share the library's context)."""

    def __init__(self, netns: Netns):
        self.netns = netns
        self._ctx: Optional[int] = None
        self._lock = threading.Lock()
        self._finalizer: Optional[weakref.finalize] = None

    def _context(self) -> int:
        if self._ctx is None:
            nft = _library()[0]
            ctx = nft.nft_ctx_new(0)
            if not ctx:
                raise NftError(f"libnftables: no context for {self.netns.name}")
            nft.nft_ctx_buffer_output(ctx)
            nft.nft_ctx_buffer_error(ctx)
            self._ctx = ctx
            self._finalizer = weakref.finalize(self, nft.nft_ctx_free, ctx)
        return self._ctx

    def command(self, text: str, flags: int = 0) -> tuple[int, str, str]:
        """Run nft commands (a whole `nft -f` script) in the namespace: (status, output, errors)."""
        with self._lock:
            if self.netns.path and not os.path.exists(self.netns.path):
                raise NetnsError(f"network namespace {self.netns.path} does not exist")
            nft = _library()[0]
            with _Entered(self.netns.path) if self.netns.path else _nothing():
                ctx = self._context()  # created inside: its netlink socket is this namespace's
                nft.nft_ctx_output_set_flags(ctx, flags)
                status = nft.nft_run_cmd_from_buffer(ctx, text.encode())
                out = (nft.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
                err = (nft.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
            return status, out, err

    def run_script(self, script: str) -> None:
        status, _, err = self.command(script)
        if status != 0:
            raise NftError(f"nft transaction refused in {self.netns.name}: {err.strip()}")

    def list_table(self) -> Optional[dict]:
        status, out, _ = self.command(f"list table {FAMILY} {TABLE}", OUTPUT_JSON)
        return json.loads(out) if status == 0 and out.strip() else None

    def tables(self) -> list[tuple[str, str]]:
        """(family, name) of every table.  Text, not JSON: with JSON output nft 1.0.6 fetches the
        whole ruleset, elements included (~60 ms with our 10,000-element table)."""
        status, out, err = self.command("list tables")
        if status != 0:
            raise NftError(f"listing the tables in {self.netns.name}: {err.strip()}")
        return [(p[1], p[2]) for p in (line.split() for line in out.splitlines()) if len(p) == 3 and p[0] == "table"]

    def has_table(self) -> bool:
        return (FAMILY, TABLE) in self.tables()

    def table_has_rules(self, family: str, name: str) -> bool:
        """Whether one table (never ours: its elements would be fetched) holds any rule."""
        status, out, err = self.command(f"list table {family} {name}", OUTPUT_TERSE)
        if status != 0:
            raise NftError(f"listing table {family} {name} in {self.netns.name}: {err.strip()}")
        return rules_in_listing(out)

    def forget_connections(self, addresses: frozenset) -> None:
        """conntrack -D per address (a process, but only when a task address leaves a table)."""
        KernelNft(self.netns).forget_connections(addresses)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._ctx = None


def rules_in_listing(text: str) -> bool:
    """Whether `nft list table` text shows a rule: a line in a chain block that is not the
    chain's own `type … hook …`, `policy` or `comment` line."""
    in_chain = False
    for line in text.splitlines():
        word = line.strip()
        if word.startswith("chain "):
            in_chain = True
        elif in_chain and word == "}":
            in_chain = False
        elif in_chain and word and not word.startswith(("type ", "policy ", "comment ")):
            return True
    return False


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def libnft_backend(netns: Netns):
    """Netns -> NftBackend writing through libnftables in this process."""
    from .backend import NftBackend
    return NftBackend(LibNft(netns))
