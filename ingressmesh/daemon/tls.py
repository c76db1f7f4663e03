"""TLS for the controller API, so the bearer token never crosses the network in clear text.

The server side is an ssl.SSLContext made from a certificate chain and its key (Docker secrets
in production); a bad file is refused at start with the file named, never at the first agent.
"""
from __future__ import annotations

import ssl


class TlsError(ValueError):
    """A certificate or key that cannot be used; the message names the files."""


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context serving `cert_file` (PEM chain, leaf first) with `key_file`."""
    for what, path in (("certificate", cert_file), ("key", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:  # ssl's own error would not say which of the two files
            raise TlsError(f"TLS {what} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"TLS certificate {cert_file} with key {key_file} cannot be used "
                       f"({getattr(exc, 'reason', None) or exc}): expected PEM files, the key matching the "
                       "certificate") from None
    return context
