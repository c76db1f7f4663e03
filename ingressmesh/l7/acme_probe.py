"""Before the ACME server is told to validate, every proxy replica must answer the challenge:
asked here on each replica's own HTTP address (not through a balancer, which would see one)."""
from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

from .acme_render import CHALLENGE_PATH


def answers(base_url: str, host: str, token: str, timeout: float = 2.0) -> str:
    """What the replica at `base_url` (http://addr:port) answers for `host`'s token ('' on error)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", CHALLENGE_PATH + token, headers={"Host": host})
        response = conn.getresponse()
        body = response.read(4096).decode("ascii", "replace")
        return body if response.status == 200 else ""
    except OSError:
        return ""
    finally:
        conn.close()


def wait_answered(base_urls, host: str, expected: dict[str, str], deadline: float, every: float = 0.2) -> list[str]:
    """Waits (until the monotonic `deadline`) for every replica to answer every token with its
    key authorization; returns the replicas that still do not ([]: all do)."""
    missing = list(base_urls)
    while True:
        missing = [url for url in missing
                   if any(answers(url, host, token) != value for token, value in expected.items())]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(every)
