"""Where the issuer keeps the account key and the certificates: named, immutable blobs (the
names of acme_names.py).  The swarm keeps them as Docker secrets; `DirectoryStore` keeps them
as files of one directory laid out like /run/secrets (one file per secret, mode 0600), which is
what a proxy with `--secrets-dir` reads, so one host (and the tests) run the whole chain."""
from __future__ import annotations

import os
from typing import Optional, Protocol

from .cert_expiry import not_after
from .certs import write_private


class SecretStore(Protocol):
    def names(self) -> list[str]: ...
    def read(self, name: str) -> Optional[bytes]: ...  # a Docker secret store cannot: account keys come from acme_account
    def not_after(self, name: str) -> Optional[float]: ...  # a certificate's expiry (Docker: a label set at creation)
    def created(self, name: str) -> float: ...  # when it was written (0: unknown): a restarted issuer's last renewal
    def create(self, name: str, data: bytes, not_after: Optional[float]) -> None: ...  # expiry of a certificate
    def remove(self, name: str) -> None: ...


class DirectoryStore:
    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if not n.startswith(".") and ".tmp-" not in n)

    def read(self, name: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.directory, name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def not_after(self, name: str) -> Optional[float]:
        data = self.read(name)
        return not_after(data.decode("ascii", "replace")) if data else None

    def created(self, name: str) -> float:
        try:
            return os.stat(os.path.join(self.directory, name)).st_mtime
        except FileNotFoundError:
            return 0.0

    def create(self, name: str, data: bytes, not_after: Optional[float] = None) -> None:
        """Like a Docker secret: a name is written once and never changed (the expiry is read
        back from the file itself)."""
        path = os.path.join(self.directory, name)
        if os.path.exists(path):
            raise FileExistsError(f"secret {name} exists already (secrets are immutable)")
        write_private(path, data.decode("ascii"))

    def remove(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
