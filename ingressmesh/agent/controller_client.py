"""The agent's side of the controller API: follow the snapshot, report this node's facts.

Several controllers may run (one per manager).  The snapshot is followed from one at a time,
failing over round-robin on connection errors, timeouts and 5xx, and staying on the one that
answered.  Reports go to every controller, because each merges its own view of the cluster.
Over https the controllers' certificates are checked (Credentials.verify: the system's CAs by
default, or the cluster's own CA file), so the token never crosses the network in clear text.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Union
from urllib.parse import urlsplit

import requests

from ..report_sequence import sequence

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0


class ControllerError(Exception):
    """A controller answered in a way the agent cannot use (e.g. refused a request as bad)."""


class ControllerAuthError(ControllerError):
    """A controller refused the token (401) or what it may do (403, e.g. a node credential
    reporting for another node).  Not retried here: back off and fix the credential."""


class ReportNotHeld(ControllerError):
    """A heartbeat by digest named a report the controller does not hold (409): send it whole."""


class ControllerUnreachable(ControllerError):
    """No controller answered; `errors` maps every URL to what went wrong with it."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__("no controller answered: " + "; ".join(f"{u}: {e}" for u, e in errors.items()))


@dataclass(frozen=True)
class Credentials:
    """The bearer token, and how to check the controllers' TLS certificates (requests' verify=):
    True for the system's CAs, the path of a CA bundle, or False (no check: labs only)."""
    token: str
    verify: Union[bool, str] = True

    @classmethod
    def of(cls, value: Union[str, "Credentials"]) -> "Credentials":
        return value if isinstance(value, Credentials) else cls(value)


@dataclass(frozen=True)
class ReportOutcome:
    accepted: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Update:
    """A newer snapshot: the whole `cluster`, or the `delta` that turns version `since` into it;
    `epoch` names the controller incarnation whose version numbers these are."""
    version: int
    cluster: Optional[dict] = None
    delta: Optional[dict] = None
    since: Optional[int] = None
    epoch: Optional[str] = None


class _Failed(Exception):
    """One controller failed in a way worth trying the next one for."""


class ControllerClient:
    """Talks to the controllers at `urls` with `token`: a bearer token (the system's CAs check
    https certificates) or Credentials (token and CA).

    `timeout` bounds connecting and, beyond the requested long-poll wait, reading an answer.
    """

    def __init__(self, urls: list[str], token: Union[str, Credentials], timeout: float = 10.0,
                 clock: Callable[[], float] = time.time):
        if not urls:
            raise ValueError("at least one controller URL is needed")
        self.urls = [_check_url(u) for u in urls]
        credentials = Credentials.of(token)
        _check_tls(self.urls, credentials.verify)
        self.timeout, self._clock = timeout, clock
        # Separate sessions for follow and report: they run on different threads, and a
        # long-poll must not hold the connection a report needs.
        self._follow_sessions = [_session(credentials) for _ in self.urls]
        self._report_sessions = [_session(credentials) for _ in self.urls]
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls), thread_name_prefix="report")
        self._lock = threading.Lock()
        self._current = 0
        self._reachable: Optional[bool] = None
        self._last_error: Optional[str] = None
        self._last_contact: Optional[float] = None

    @property
    def current_url(self) -> str:
        return self.urls[self._current]

    @property
    def reachable(self) -> Optional[bool]:
        """Whether the last exchange reached a controller; None before the first one."""
        return self._reachable

    @property
    def last_error(self) -> Optional[str]:
        return self._last_error

    @property
    def last_contact(self) -> Optional[float]:
        """Clock time of the last answer from any controller."""
        return self._last_contact

    def follow(self, since: int, wait: float) -> Optional[tuple[int, dict]]:
        """(version, cluster) once the controller has a snapshot other than `since`; None when
        nothing changed within `wait` seconds.  Raises ControllerUnreachable (every URL failed),
        ControllerAuthError (401) or ControllerError (another refusal)."""
        update = self.follow_update(since, wait, deltas=False)
        return None if update is None else (update.version, update.cluster)

    def follow_update(self, since: int, wait: float, deltas: bool = True,
                      epoch: Optional[str] = None) -> Optional["Update"]:
        """Like follow, but asks for only what changed since version `since` of the controller
        incarnation `epoch` (delta.py): the answer is an Update holding either a delta from
        `since` or, when the controller cannot give one (too far behind, another controller or
        incarnation), the whole cluster."""
        errors: dict[str, str] = {}
        start = self._current
        for step in range(len(self.urls)):
            index = (start + step) % len(self.urls)
            url = self.urls[index]
            try:
                result = self._follow_one(index, since, wait, deltas, epoch)
            except _Failed as exc:
                errors[url] = str(exc)
                log.info("controller %s: %s", url, exc)
                continue
            if index != start:
                log.warning("following controller %s now (%s failed)", url, ", ".join(errors))
            self._current = index
            return result
        self._failed(ControllerUnreachable(errors))
        raise ControllerUnreachable(errors)

    def _follow_one(self, index: int, since: int, wait: float, deltas: bool,
                    epoch: Optional[str]) -> Optional["Update"]:
        url = self.urls[index]
        params = {"since": str(since), "wait": f"{wait:g}",
                  **({"delta": "1", "epoch": epoch or ""} if deltas else {})}
        response = _call(self._follow_sessions[index], "GET", url + "/v1/snapshot", params=params,
                         timeout=(min(CONNECT_TIMEOUT, self.timeout), wait + self.timeout))
        self._check(url, response)
        if response.status_code == 304:
            return None
        try:
            body = response.json()
            version = body["version"]
            cluster, change, base = body.get("cluster"), body.get("delta"), body.get("since")
            epoch = body.get("epoch") if isinstance(body.get("epoch"), str) else None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _Failed(f"bad snapshot response: {response.text[:200]!r}") from None
        if isinstance(version, bool) or not isinstance(version, int):
            raise _Failed("bad snapshot response: version must be an integer")
        if isinstance(cluster, dict):
            return Update(version, cluster=cluster, epoch=epoch)
        if isinstance(change, dict) and isinstance(base, int) and not isinstance(base, bool):
            return Update(version, delta=change, since=base, epoch=epoch)
        raise _Failed("bad snapshot response: neither a cluster object nor a delta with its base version")

    def report(self, report: dict) -> ReportOutcome:
        """Posts `report` to every controller at once.  Returns who accepted it; raises
        ControllerAuthError or ControllerUnreachable only when none did."""
        futures = {url: self._pool.submit(self._report_one, i, report) for i, url in enumerate(self.urls)}
        outcome = ReportOutcome()
        refusals: list[ControllerError] = []  # controllers that answered, but said no
        for url, future in futures.items():
            try:
                future.result()
                outcome.accepted.append(url)
            except ControllerError as exc:
                refusals.append(exc)
                outcome.errors[url] = str(exc)
            except _Failed as exc:
                outcome.errors[url] = str(exc)
        for url, error in outcome.errors.items():
            log.warning("report to %s not accepted: %s", url, error)
        if outcome.accepted:
            return outcome
        if not refusals:
            self._failed(ControllerUnreachable(outcome.errors))
            raise ControllerUnreachable(outcome.errors)
        kind = ControllerAuthError if any(isinstance(e, ControllerAuthError) for e in refusals) else ControllerError
        raise kind("; ".join(f"{u}: {e}" for u, e in outcome.errors.items()))

    def report_to(self, index: int, report: dict) -> None:
        """Posts `report` to controller `index` only (one sender per controller, so a hung one
        never delays the others).  Raises ControllerUnreachable or a ControllerError."""
        try:
            self._report_one(index, report)
        except _Failed as exc:
            raise ControllerUnreachable({self.urls[index]: str(exc)}) from None

    def _report_one(self, index: int, report: dict) -> None:
        url = self.urls[index]
        # Stamped as it leaves: the controller refuses a report older than one it accepted.
        body = {**report, "seq": sequence()}
        response = _call(self._report_sessions[index], "POST", url + "/v1/report", json=body,
                         timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout))
        self._check(url, response)

    def _check(self, url: str, response: requests.Response) -> None:
        """Records the contact; raises for anything but 200/204/304."""
        status = response.status_code
        if status >= 500:
            raise _Failed(f"HTTP {status}: {_error_text(response)}")
        error: Optional[ControllerError] = None
        if status == 401:
            error = ControllerAuthError(f"{url} refused the token: {_error_text(response)}")
        elif status == 403:
            error = ControllerAuthError(f"{url} refused the credential: {_error_text(response)}")
        elif status == 409:
            error = ReportNotHeld(f"{url}: {_error_text(response)}")
        elif status not in (200, 204, 304):
            error = ControllerError(f"{url}: HTTP {status}: {_error_text(response)}")
        with self._lock:  # it answered, so it is reachable, even when it refused
            self._reachable, self._last_contact = True, self._clock()
            self._last_error = str(error) if error else None
        if error:
            raise error

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self._reachable, self._last_error = False, str(error)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for session in self._follow_sessions + self._report_sessions:
            session.close()


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"controller URL {url!r}: expected http(s)://host:port")
    return url.rstrip("/")


def _check_tls(urls: list[str], verify: Union[bool, str]) -> None:
    """Refuses a CA file that cannot be read now (not at the first request); warns where the
    token would cross the network in clear text or unchecked."""
    if isinstance(verify, str) and not os.access(verify, os.R_OK):
        raise ValueError(f"CA file {verify}: cannot read it")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            log.warning("controller %s is plain http: the token crosses the network in clear text "
                        "(serve it with --tls-cert/--tls-key and use https://)", url)
        elif parts.scheme == "https" and verify is False:
            log.warning("controller %s: its TLS certificate is not checked (--no-tls-verify)", url)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _session(credentials: Credentials) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {credentials.token}"
    session.verify = credentials.verify
    session.trust_env = False  # never route agent-to-controller traffic through an env proxy
    return session


def _call(session: requests.Session, method: str, url: str, **kwargs) -> requests.Response:
    try:
        return session.request(method, url, **kwargs)
    except requests.RequestException as exc:
        raise _Failed(_describe(exc)) from None


def _describe(exc: requests.RequestException) -> str:
    """A short reason instead of urllib3's nested repr."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer in time (read timed out)"
    if isinstance(exc, requests.exceptions.SSLError):
        return _describe_tls(str(exc))
    found = re.search(r"\[Errno -?\d+\] [^'\"\)]+", str(exc))
    if found:
        return found.group(0).strip()
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _describe_tls(text: str) -> str:
    found = re.search(r"\[SSL: ([A-Z_]+)\] ([^(')\"]+)", text)
    detail = found.group(2).strip() if found else text[:200]
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"TLS certificate does not verify ({detail}): is --ca the CA that signed the "
                "controller's certificate, and is the URL's host in the certificate?")
    if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER_FAILURE" in text:
        return f"TLS handshake failed ({detail}): does the controller serve https (--tls-cert)?"
    return f"TLS error: {detail}"


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.reason))
    except (ValueError, AttributeError):
        return response.text[:200] or str(response.reason)
