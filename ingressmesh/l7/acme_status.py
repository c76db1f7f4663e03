"""The issuer's per-host state as people and monitors read it: `show --l7` lines, the hosts
`/healthz` of `l7 deploy` names, and a bounded reason for the metrics.  Pure: it reads the rows
of Issuer.document() (acme_issuer.py), which `l7 deploy --listen` serves at GET /acme.

A failing host does not make `l7 deploy` unhealthy: it keeps serving its previous certificate
(or plain HTTP), other hosts go on, and a 503 would only get the issuer restarted (losing its
backoff, ordering again).  /healthz lists it under `acme_failing`; alerts come from /metrics."""
from __future__ import annotations

import json
import time
import urllib.request

# (a piece of the error text, its kind): the metrics' `reason` label takes only these values
KINDS = (("rateLimited", "rate_limited"), ("the issuer's own limit", "issuer_limit"),
         ("is unreachable", "unreachable"), ("challenge was refused", "challenge_refused"),
         ("did not reach every proxy", "challenge_not_answered"), ("did not finish validating", "timeout"))
MAX_HOSTS = 1000  # series per metric at most (hosts come from service labels)


def error_kind(error: str) -> str:
    """The bounded kind of an issuer error ("other" when none fits)."""
    return next((kind for piece, kind in KINDS if piece in error), "other")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch)) if epoch else "never"


def serving(row: dict) -> str:
    return f"certificate v{row['version']}" if row.get("version") else "plain HTTP"


def failing(rows: list[dict]) -> list[dict]:
    """The hosts whose last order failed: what /healthz says about each."""
    return [{"host": r["host"], "reason": r["last_error"], "kind": error_kind(r["last_error"]),
             "at": _when(r.get("last_error_at", 0.0)), "serving": serving(r), "next_try": _when(r["next_try"])}
            for r in rows if r.get("last_error")]


def lines(rows: list[dict]) -> list[str]:
    """One line per host for `show --l7`, plus one per failing host."""
    found = []
    for row in rows:
        found.append(f"acme {row['host']} (service {row['service'] or '?'}): {serving(row)}, expires "
                     f"{_when(row['not_after']) if row.get('version') else '-'}, last renewal {_when(row['issued_at'])}")
        if row.get("last_error"):
            found.append(f"acme {row['host']}: last error at {_when(row.get('last_error_at', 0.0))}: "
                         f"{row['last_error']} (next try {_when(row['next_try'])})")
    return found


def fetch(url: str, timeout: float = 5.0) -> dict:
    """GET `url`/acme of `l7 deploy --listen`: {"hosts": rows}, or {"error": why} when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/acme", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as err:  # URLError is an OSError
        return {"error": f"{url}/acme: {getattr(err, 'reason', err)}"}


def issuer_lines(states: dict, url=None) -> list[str]:
    """`show --l7`'s ACME lines: the issuer runs in `l7 deploy` on one manager (`url`, else this
    host's port 9404); not answering is said only when asked or when a proxy serves ACME certificates."""
    issuer = fetch(url or "http://127.0.0.1:9404")
    if "error" not in issuer:
        role = [f"ACME issuer: {issuer['issuer']}"] if issuer.get("issuer") else []  # issuing, or standing by
        return role + lines(issuer.get("hosts", []))
    if url or any(c["source"] == "acme" for d in states.values() for c in d.get("certificates", ())):
        return [f"ACME issuer: {issuer['error']} (it runs in l7 deploy on one manager: show --l7 there, "
                "or --acme-issuer http://<manager>:9404)"]
    return []
