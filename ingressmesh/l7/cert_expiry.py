"""Per host, which certificate a proxy serves and until when: for `show --l7` (the state
document's `certificates`) and `/metrics`.  Files in the work dir are named by their content
hash and never change, so each is parsed once (the cache belongs to the proxy, not the module)."""
from __future__ import annotations

from typing import Optional

from cryptography import x509


def not_after(pem: str) -> float:
    """The first certificate's notAfter (epoch seconds); raises ValueError when there is none."""
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc.timestamp()


class CertExpiry:
    def __init__(self) -> None:
        self._seen: dict[str, Optional[float]] = {}

    def of(self, pem_path: str) -> Optional[float]:
        """The leaf's notAfter (epoch seconds), None when unreadable."""
        if pem_path not in self._seen:
            try:
                with open(pem_path, encoding="ascii") as handle:
                    self._seen[pem_path] = not_after(handle.read())
            except (OSError, ValueError):
                return None
        return self._seen[pem_path]

    def rows(self, table) -> list[dict]:
        """One row per TLS host this proxy terminates: source (secret or acme), secret, expiry."""
        found, live = [], set()
        for tls in (table.tls_hosts if table else ()):
            if not tls.pem:
                continue
            live.add(tls.pem)
            found.append({"host": tls.host, "source": "acme" if tls.acme else "secret", "ssl_cert": tls.cert,
                          "not_after": self.of(tls.pem)})
        self._seen = {k: v for k, v in self._seen.items() if k in live}  # files pruned with their configs
        return found
