"""Runs the filtered component as an unprivileged user, next to the filter in one container.

The component must not reach the real socket: it runs as `uid:gid` with no supplementary groups,
no capabilities (a non-root uid keeps none) and no_new_privs (no setuid binary gives root back),
and the real socket must not be connectable by that user — checked before it starts."""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import stat

PR_SET_NO_NEW_PRIVS = 38


class RunAsError(RuntimeError):
    """The separation would not hold (the message says why)."""


def check_unreachable(socket_path: str, uid: int, gid: int) -> None:
    """Refuse when `uid:gid` could connect to `socket_path` (connecting needs write permission)."""
    info = os.stat(socket_path)
    if uid == 0 or info.st_uid == uid or (info.st_gid == gid and info.st_mode & stat.S_IWGRP) \
            or info.st_mode & stat.S_IWOTH:
        raise RunAsError(f"{socket_path} (mode {stat.S_IMODE(info.st_mode):o}, owner {info.st_uid}:{info.st_gid}) "
                         f"is writable by {uid}:{gid}: it would reach dockerd around the filter")


def _no_new_privs() -> None:  # in the child, before exec
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


async def run(argv: list[str], uid: int, gid: int) -> int:
    """Run argv as uid:gid until it ends; SIGTERM/SIGINT are passed on.  Its exit code."""
    child = await asyncio.create_subprocess_exec(*argv, user=uid, group=gid, extra_groups=[],
                                                 preexec_fn=_no_new_privs)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, child.send_signal, signum)
    try:
        return await child.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
