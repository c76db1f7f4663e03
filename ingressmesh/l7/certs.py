"""Certificates and CA bundles from Docker secrets, checked before any config names them.

The planner only knows secret names.  Here each (certificate, key) pair is read from the
secrets directory (`/run/secrets` in a proxy task), cut down to its PEM blocks, checked with
OpenSSL (the key must match the certificate) and written once into the work dir as one
combined PEM named by its content hash, mode 0600.  A pair that is missing, unreadable or
mismatched refuses the services of that host by name; nobody else is affected.  A secret that
is missing only because this replica has not been given it yet (a rotation rolls the proxy
service start-first) keeps the certificate the host had, so a rotation never drops a host.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
from dataclasses import replace
from typing import Optional

from .routes import Refusal, RouteTable, without_services

log = logging.getLogger(__name__)
MAX_PEM = 1 << 20  # a secret larger than this is not a certificate
_SECRET = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----\n[A-Za-z0-9+/=\n]+?-----END \1-----")
_KEYS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")


class SecretError(ValueError):
    """A secret that cannot serve; the message names the secret, never its content."""


class Missing(SecretError):
    """The secret is not in the secrets directory."""


def write_private(path: str, text: str) -> None:
    """Atomic write, mode 0600 from the start (the file may hold a private key)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    os.replace(tmp, path)


def pem_blocks(secrets_dir: Optional[str], name: str) -> list[tuple[str, str]]:
    """The secret's PEM blocks as (label, text); anything between blocks is dropped."""
    if not secrets_dir:
        raise SecretError(f"secret {name}: this proxy has no secrets directory (ingressmesh proxy --secrets-dir)")
    if not _SECRET.fullmatch(name):
        raise SecretError(f"secret {name!r}: not a Docker secret name")
    try:
        with open(os.path.join(secrets_dir, name), "rb") as handle:
            data = handle.read(MAX_PEM + 1)
    except FileNotFoundError:
        raise Missing(f"secret {name} is not available to the proxy (no such secret, not allowed for the "
                      "proxies - l7 deploy's log names why -, or not attached to the proxy service yet)") from None
    except OSError as err:
        raise SecretError(f"secret {name}: cannot read it ({err.strerror or err})") from None
    if len(data) > MAX_PEM:
        raise SecretError(f"secret {name}: larger than {MAX_PEM} bytes, not a PEM file")
    try:
        text = data.decode("ascii").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise SecretError(f"secret {name}: not a PEM file (binary content)") from None
    if "ENCRYPTED" in text:
        raise SecretError(f"secret {name}: an encrypted key (HAProxy would need its passphrase)")
    return [(m.group(1), m.group(0)) for m in _BLOCK.finditer(text)]


def _certificates(secrets_dir: Optional[str], name: str, what: str) -> list[str]:
    blocks = pem_blocks(secrets_dir, name)
    if any(label.endswith("PRIVATE KEY") for label, _ in blocks):
        raise SecretError(f"secret {name} ({what}) holds a private key; it should hold only certificates")
    found = [text for label, text in blocks if label == "CERTIFICATE"]
    if not found:
        raise SecretError(f"secret {name} ({what}): no PEM certificate in it")
    return found


def _key(secrets_dir: Optional[str], name: str) -> str:
    found = [text for label, text in pem_blocks(secrets_dir, name) if label in _KEYS]
    if len(found) != 1:
        raise SecretError(f"secret {name} (ssl_key): expected one PEM private key, found {len(found)}")
    return found[0]


class CertStore:
    """Resolves the TLS secrets of a RouteTable into checked files under `out_dir`."""

    def __init__(self, secrets_dir: Optional[str], out_dir: str):
        self.secrets_dir, self.out_dir = secrets_dir, out_dir
        self._checked: set[str] = set()  # digests of files written and verified
        self._kept: dict[tuple, str] = {}  # (kind, owner...) -> the file the last resolve used
        self._said: set[str] = set()

    def resolve(self, table: RouteTable, https: bool) -> RouteTable:
        """The table with every TLS host's PEM and every verified backend's CA file filled in;
        services whose secrets fail are refused by name and leave the table whole."""
        refusals: dict[str, str] = {}
        notes, kept, hosts, backends = [], {}, [], []
        for tls in table.tls_hosts:
            reason, pem = "", ""
            if not https:
                reason = f"host {tls.host}: TLS labels, but this proxy serves no HTTPS port (--https-port)"
            elif not tls.passthrough and tls.cert:
                owner = ("pem", tls.host, tls.services)
                pem, reason = self._material(owner, lambda: self._pair(tls.cert, tls.key), notes, tls.host)
                reason = reason and f"host {tls.host}: {reason}"
                kept[owner] = pem
            if reason and tls.acme:  # an issued certificate not usable here (yet): plain HTTP, not refused
                notes.append(f"{reason}; the host is served on plain HTTP meanwhile")
                continue
            for service in tls.services:
                if reason:
                    refusals.setdefault(service, reason)
            hosts.append(replace(tls, pem=pem))
        for backend in table.backends:
            ca_file = ""
            if backend.ssl == "required":
                owner = ("ca", backend.name)
                ca_file, reason = self._material(owner, lambda: self._ca(backend.ca_secret), notes, backend.name)
                kept[owner] = ca_file
                for service in backend.services:
                    if reason:
                        refusals.setdefault(service, f"com.docker.lb.ssl_backend_ca: {reason}")
            backends.append(replace(backend, ca_file=ca_file))
        self._kept = {k: v for k, v in kept.items() if v}
        resolved = replace(table, tls_hosts=tuple(hosts), backends=tuple(backends),
                           notes=tuple(sorted(set(table.notes) | set(notes))))
        result = without_services(resolved, [Refusal(s, r) for s, r in sorted(refusals.items())])
        self._say([f"service {s} refused: {r}" for s, r in sorted(refusals.items())] + notes)
        return result

    def files(self, table: RouteTable) -> set[str]:
        """The files `table` names (what a reload of it needs)."""
        return {t.pem for t in table.tls_hosts if t.pem} | {b.ca_file for b in table.backends if b.ca_file}

    def prune(self, keep: set[str]) -> None:
        """Removes the certificate files no running config names any more."""
        try:
            names = os.listdir(self.out_dir)
        except OSError:
            return
        for name in names:
            path = os.path.join(self.out_dir, name)
            if name.endswith(".pem") and path not in keep:
                try:
                    os.unlink(path)
                except OSError:
                    pass
                self._checked.discard(name[:-4].split("-", 1)[-1])

    def _material(self, owner: tuple, load, notes: list, where: str) -> tuple[str, str]:
        """(file, '') or ('', reason); a missing secret keeps the file `owner` had."""
        try:
            return load(), ""
        except Missing as err:
            previous = self._kept.get(owner)
            if previous and os.path.exists(previous):
                notes.append(f"{where}: {err}; keeping the one it had")
                return previous, ""
            return "", str(err)
        except (SecretError, OSError) as err:
            return "", str(err)

    def _pair(self, cert: str, key: str) -> str:
        text = "".join(block + "\n" for block in _certificates(self.secrets_dir, cert, "ssl_cert"))
        text += _key(self.secrets_dir, key) + "\n"
        return self._write("cert", text, lambda path: _check_pair(path, cert, key))

    def _ca(self, name: str) -> str:
        text = "".join(block + "\n" for block in _certificates(self.secrets_dir, name, "ssl_backend_ca"))
        return self._write("ca", text, lambda path: _check_ca(text, name))

    def _write(self, kind: str, text: str, check) -> str:
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        path = os.path.join(self.out_dir, f"{kind}-{digest}.pem")
        if digest in self._checked and os.path.exists(path):
            return path
        os.makedirs(self.out_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.check"
        write_private(tmp, text)
        try:
            check(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._checked.add(digest)
        return path

    def _say(self, lines: list[str]) -> None:
        for line in sorted(set(lines) - self._said):
            log.warning("%s", line)
        self._said = set(lines)


def _check_pair(path: str, cert: str, key: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path, password=lambda: b"")
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or "key values mismatch" in str(err):
            raise SecretError(f"the key in secret {key} does not match the certificate in secret {cert}") from None
        raise SecretError(f"secrets {cert} and {key}: not a usable certificate and key ({err.reason or err})") from None


def _check_ca(text: str, name: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as err:
        raise SecretError(f"secret {name} (ssl_backend_ca): not a usable CA bundle ({err})") from None
