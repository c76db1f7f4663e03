"""Versioned Docker secret names of the ACME account key and the issued certificates.

A Docker secret cannot change, so each renewal creates new secrets (`.v2`, `.v3`...) and the
proxies switch to them; the issuer removes the older versions once nothing names them.  A name
is a pure function of (host, version): the proxies derive it from the `acme.certs` label, and
the names fit Docker's grammar (`[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}`) and never start with
`ingressmesh` (those are never given to the proxies: secret_policy.py).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Optional

PREFIX = "acme."
_SLUG_MAX = 30
_NAME = re.compile(r"^acme\.(?:(account)|[a-z0-9-]{1,30})\.([0-9a-f]{8})\.v([0-9]{1,9})\.(crt|key)$")


@dataclass(frozen=True, order=True)
class SecretName:
    """One parsed name: which subject (an 8-hex digest of the host or the directory URL), which
    version, which part."""
    subject: str
    version: int
    part: str  # "crt" or "key"
    account: bool = False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _slug(host: str) -> str:
    slug = re.sub(r"[^a-z0-9-]", "-", host.lower()).strip("-")[:_SLUG_MAX].strip("-")
    return slug or "host"


def cert_secrets(host: str, version: int) -> tuple[str, str]:
    """(certificate chain, private key) secret names of `host`'s certificate `version`."""
    base = f"{PREFIX}{_slug(host)}.{_digest(host)}.v{int(version)}"
    return base + ".crt", base + ".key"


def account_secret(directory_url: str, version: int) -> str:
    """The account key for one ACME server (another directory is another account)."""
    return f"{PREFIX}account.{_digest(directory_url)}.v{int(version)}.key"


def parse(name: str) -> Optional[SecretName]:
    found = _NAME.fullmatch(name)
    if not found:
        return None
    return SecretName(found.group(2), int(found.group(3)), found.group(4), account=bool(found.group(1)))


def host_subject(host: str) -> str:
    return _digest(host)


def obsolete(names: Iterable[str], current: dict[str, int], keep_hosts: Iterable[str] = ()) -> list[str]:
    """The ACME secrets to remove: versions of a host older than its `current` one, and every
    version of a host that no longer wants a certificate (not in `current` nor `keep_hosts`).
    Account keys and names that are not ours are never listed."""
    wanted = {host_subject(h): v for h, v in current.items()}
    kept = {host_subject(h) for h in keep_hosts}
    found = []
    for name in names:
        parsed = parse(name)
        if parsed is None or parsed.account or parsed.subject in kept:
            continue
        if parsed.subject not in wanted or parsed.version < wanted[parsed.subject]:
            found.append(name)
    return sorted(found)
