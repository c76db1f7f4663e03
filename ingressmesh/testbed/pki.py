"""A throw-away certificate authority made with the `openssl` CLI (EC keys: fast), for tests and
the lab's HTTPS demo; each leaf's subject O field tells versions of a certificate apart."""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess


class PkiError(RuntimeError):
    """openssl is missing or refused a step."""


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


class Pki:
    """A test CA in `directory`, and leaf certificates it signs (or self-signed ones)."""

    def __init__(self, directory: str, name: str = "ca"):
        if shutil.which("openssl") is None:
            raise PkiError("the openssl CLI is not installed (apt-get install openssl)")
        self.dir, self.name = directory, name
        os.makedirs(directory, exist_ok=True)
        self.cert, self.key = self.path(f"{name}.crt"), self.path(f"{name}.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN=Test CA {name}", cwd=directory)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def leaf(self, name: str, host: str, org: str = "ingressmesh-test") -> tuple[str, str]:
        """(certificate, key) for `host`, signed by this CA; the subject's O tells versions apart."""
        cert, key, csr, ext = (self.path(f"{name}.{x}") for x in ("crt", "key", "csr", "ext"))
        with open(ext, "w") as handle:
            handle.write(f"subjectAltName={'IP' if _is_ip(host) else 'DNS'}:{host}\n")  # e.g. pebble on a lab address
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                 "-out", csr, "-subj", f"/O={org}/CN={host}", cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", cert, cwd=self.dir)
        return cert, key


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
