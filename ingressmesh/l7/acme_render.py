"""HTTP-01 answers in the HAProxy config: on the plain HTTP frontend, before the ssl_only and
label redirects (the ACME server asks on port 80 and must get the key authorization itself)."""
from __future__ import annotations

from .safe import check_safe

CHALLENGE_PATH = "/.well-known/acme-challenge/"


def challenge_rules(table) -> list[str]:
    """One `http-request return` per token, only for the hosts its service serves."""
    lines = []
    for challenge in table.challenges:
        hosts = " ".join(check_safe(h, "challenge host") for h in challenge.hosts)
        lines.append(f"    http-request return status 200 content-type text/plain string "
                     f"\"{check_safe(challenge.key_authorization, 'key authorization')}\" "
                     f"if {{ path {CHALLENGE_PATH}{check_safe(challenge.token, 'token')} }} "
                     f"{{ var(txn.host) -m str {hosts} }}")
    return lines
