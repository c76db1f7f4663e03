"""Token files: the cluster secret, or a credential derived from it (daemon/credentials.py).

The cluster secret lets its holder read the whole cluster snapshot and report for any node,
so it stays on the managers; agents and proxies get derived credentials.  Either is loaded
from a file (a Docker secret or a 0600 file, never the command line, where `ps` shows it)
and checked for length and file permissions.
"""
from __future__ import annotations

import logging
import os
import secrets
import stat

log = logging.getLogger(__name__)

MIN_LENGTH = 16
DEFAULT_PATH = "/run/secrets/ingressmesh_token"


class TokenError(ValueError):
    """The token file cannot be used; the message names the file and what is wrong."""


def load_token(path: str) -> str:
    """Reads the token from `path` (surrounding whitespace ignored); refuses a short or empty one."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(64 * 1024)
    except OSError as exc:
        raise TokenError(f"token file {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenError(f"token file {path}: not UTF-8 text") from None
    if not token:
        raise TokenError(f"token file {path}: empty (write one, e.g. `openssl rand -hex 32 > {path}`)")
    if len(token) < MIN_LENGTH:
        raise TokenError(f"token file {path}: token is {len(token)} characters, need at least {MIN_LENGTH}")
    if any(ch.isspace() for ch in token):
        raise TokenError(f"token file {path}: token contains whitespace; it must be one word")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by group or others (mode %04o); chmod 600 it",
                    path, stat.S_IMODE(mode))
    return token


def generate_token(nbytes: int = 32) -> str:
    """A new random token: `nbytes` of entropy as URL-safe text (43 characters for 32 bytes)."""
    return secrets.token_urlsafe(nbytes)


def write_token(path: str, token: str) -> None:
    """Writes `token` to a new file created 0600 (fails if it exists: never overwrite a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
