"""The ACME account key, derived from a secret every manager already holds (the cluster secret
`l7 deploy` is given), so any manager's issuer signs as the same account without reading a key
back: Docker secrets cannot be read through the API, only mounted into a task at its start.

HKDF-SHA256 of the secret, bound to the directory URL (another ACME server is another account),
mapped onto a P-256 private scalar.  Rotating the secret gives a new account; the certificates
already issued stay valid.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_SALT = b"ingressmesh acme account key v1"


def derived_key_pem(secret: bytes, directory_url: str) -> bytes:
    """The account key (PKCS#8 PEM) for `directory_url`, the same for everyone holding `secret`."""
    if len(secret) < 16:
        raise ValueError("the secret the ACME account key is derived from is shorter than 16 bytes")
    material = HKDF(algorithm=hashes.SHA256(), length=48, salt=_SALT, info=directory_url.encode()).derive(secret)
    scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1  # 384 bits onto [1, n-1]: no visible bias
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
