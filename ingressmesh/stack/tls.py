"""TLS for the stack's agent-controller link (`install --stack --tls`), made on the manager.

The bearer credentials must not cross the network in clear text.  `install --stack --tls` keeps
a CA and a controller certificate in a directory on the manager (0700, keys 0600; openssl, as the
README's recipe), the certificate naming every manager's address (the agents dial the managers
they learn from `docker info`) and `ingressmesh-controller`.  They reach the services as Docker
secrets named after the certificate's hash (secrets cannot change in place; a new manager gives
a new certificate, new names, a rolling update): the controllers get the certificate and its key,
the agents, `l7 deploy` and its proxies only the CA.  The CA's key never leaves the manager's directory.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import tempfile

TLS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingressmesh-tls.yml")
L7_TLS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ingressmesh-l7-tls.yml")  # with --l7-config
SECRETS = {"cert": "ingressmesh_tls_cert", "key": "ingressmesh_tls_key", "ca": "ingressmesh_ca"}
FILES = {"cert": "controller.pem", "key": "controller.key", "ca": "ca.pem"}
CA_KEY = "ca.key"
NAME = "ingressmesh-controller"


class TlsSetupError(RuntimeError):
    """openssl failed, or the directory cannot be used; the message says which step."""


def _openssl(*args: str) -> str:
    try:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise TlsSetupError("openssl: not installed on this manager (apt-get install openssl)") from None
    if done.returncode != 0:
        raise TlsSetupError(f"openssl {args[0]}: {done.stderr.strip()[-300:]}")
    return done.stdout


def subject_alt_names(addresses: list[str]) -> str:
    """`subjectAltName=` value for the managers' addresses (IPs or names) and NAME."""
    names = [f"DNS:{NAME}"]
    for address in sorted(set(addresses)):
        host = address.strip("[]")
        try:
            names.append(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            names.append(f"DNS:{host}")
    return ",".join(names)


def certificate_names(cert_file: str) -> str:
    """The subjectAltName extension of a certificate, as openssl prints it."""
    return _openssl("x509", "-in", cert_file, "-noout", "-ext", "subjectAltName")


def covers(cert_file: str, addresses: list[str]) -> bool:
    """Whether the certificate names every one of `addresses` (and NAME)."""
    printed = certificate_names(cert_file).replace("IP Address:", "IP:")
    wanted = subject_alt_names(addresses).split(",")
    return all(name in printed for name in wanted)


def ensure_files(directory: str, addresses: list[str]) -> bool:
    """The CA (made once) and a controller certificate naming `addresses` in `directory`; True
    when a certificate was made now (first install, or a manager it did not name)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    if not os.path.exists(path(FILES["ca"])):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "3650",
                 "-subj", "/CN=ingressmesh-ca", "-keyout", path(CA_KEY), "-out", path(FILES["ca"]))
        os.chmod(path(CA_KEY), 0o600)
    if os.path.exists(path(FILES["cert"])) and covers(path(FILES["cert"]), addresses):
        return False
    with tempfile.TemporaryDirectory(dir=directory) as work:
        csr, ext = os.path.join(work, "controller.csr"), os.path.join(work, "ext")
        with open(ext, "w", encoding="ascii") as handle:
            handle.write(f"subjectAltName={subject_alt_names(addresses)}\nextendedKeyUsage=serverAuth\n")
        key = os.path.join(work, FILES["key"])
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={NAME}",
                 "-keyout", key, "-out", csr)
        cert = os.path.join(work, FILES["cert"])
        _openssl("x509", "-req", "-in", csr, "-CA", path(FILES["ca"]), "-CAkey", path(CA_KEY), "-CAcreateserial",
                 "-days", "825", "-extfile", ext, "-out", cert)
        os.chmod(key, 0o600)
        os.replace(key, path(FILES["key"]))
        os.replace(cert, path(FILES["cert"]))
    return True


def files_hash(directory: str) -> str:
    """Names this certificate, key and CA in the secrets' names."""
    digest = hashlib.sha256()
    for part in ("cert", "key", "ca"):
        with open(os.path.join(directory, FILES[part]), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:12]


def secret_names(digest: str) -> dict[str, str]:
    return {part: f"{name}_{digest}" for part, name in SECRETS.items()}
