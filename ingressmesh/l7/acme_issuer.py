"""The issuer: one pass over the swarm's services orders the certificates that are due.

Inputs are the services (model.Service: their labels), outputs go through two ports:
- a SecretStore (acme_store.py) gets the account key and each certificate version, immutable;
- a Publisher puts the issuer's labels on the proxy service (acme_labels.py): the HTTP-01
  answers of a host while its order is validated, then the certificate version each host
  serves.  Labels travel with the snapshot, so every proxy replica gets them the way it gets routes.
The served versions are read back from the proxy service's labels at every pass, so an issuer
that restarts (or its successor on another manager) continues where the last one stopped.  Errors are per host: the host is
named, keeps what it served, and waits (acme_schedule.py); other hosts go on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Optional, Protocol

from . import acme_labels, acme_names, acme_probe, acme_schedule
from .acme_client import AcmeClient, AcmeError, new_key_pem
from .acme_schedule import HostState, Policy
from .acme_settings import AcmeSettings
from .acme_store import SecretStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def answer(self, host: str, answers: dict[str, str]) -> None:
        """Sets the host's HTTP-01 answers ({}: none)."""

    def serve(self, versions: dict[str, int]) -> None:
        """Sets which certificate version each host serves (a host not named: none)."""


class Issuer:
    def __init__(self, settings: AcmeSettings, store: SecretStore, publisher: Publisher, proxy_service: str,
                 probe_urls: tuple[str, ...], policy: Optional[Policy] = None,
                 clock: Callable[[], float] = time.time, propagation_timeout: float = 30.0,
                 account_key: Optional[bytes] = None, service_cluster: str = "",
                 may_issue: Callable[[], bool] = lambda: True):
        """`may_issue()`: whether this issuer still holds the issuer lease (acme_lease.py): asked
        before each order, before the ACME server is told to validate and before a certificate is
        stored, since one order can outlast the lease."""
        self.settings, self.store, self.publisher, self.probe_urls = settings, store, publisher, probe_urls
        self.proxy_service = proxy_service  # whose labels say what is served (acme_labels.published)
        self.service_cluster = service_cluster  # the labelled services its proxies route
        self.account_key = account_key  # None: a key kept in the store (acme_account.py derives one instead)
        self.policy = policy or Policy(renew_before=settings.renew_before)
        self.clock, self.propagation_timeout = clock, propagation_timeout
        self.states: dict[str, HostState] = {}
        self.service_of: dict[str, str] = {}  # host -> the service it is issued for
        self.refused: dict[str, str] = {}  # service -> why it gets no certificate
        self.order_times: list[float] = []
        self.may_issue = may_issue
        self._client: Optional[AcmeClient] = None

    @property
    def client(self) -> AcmeClient:
        if self._client is None:
            self._client = AcmeClient(self.settings, self._account_key())
        return self._client

    def _account_key(self) -> bytes:
        """The given key, else the store's account key secret (created once; the account
        survives issuer restarts)."""
        if self.account_key is not None:
            return self.account_key
        name = acme_names.account_secret(self.settings.directory_url, 1)
        found = self.store.read(name)
        if found is None:
            self.store.create(name, new_key_pem(), None)
            found = self.store.read(name)
        return found

    def run_once(self, services) -> dict[str, HostState]:
        """Orders what is due now; returns the state of every host that wants a certificate."""
        now = self.clock()
        self.refused, wanted = {}, {}
        services = list(services)
        for request in acme_labels.requests(services, self.service_cluster):
            if request.reason:
                self.refused[request.service] = request.reason
                continue
            for host in request.hosts:
                wanted.setdefault(host, request.service)
        proxy = next((s for s in services if s.name == self.proxy_service), None)
        found, _, problems = acme_labels.published(proxy.labels if proxy is not None else {})
        for problem in problems:
            log.warning("proxy service %s: %s; issuing anew", self.proxy_service, problem)
        self.service_of = wanted
        self.states = {host: self._known(host, found.get(host, 0)) for host in wanted}
        served = {host: st.version for host, st in self.states.items() if st.version}
        if set(found) - set(wanted):  # hosts that no longer ask: unmounted first, their secrets go after
            self.publisher.serve(served)
        self._cleanup(served)
        for host, service in sorted(wanted.items()):
            if not self.may_issue():
                break  # the lease went (to another l7 deploy): it goes on from what is published
            if acme_schedule.due(self.states[host], now, self.policy):
                self.states[host] = self._order(host, service, served, now)
        return dict(self.states)

    def _known(self, host: str, version: int) -> HostState:
        """The host's state, its served version as the labels say (read back from the store)."""
        state = self.states.get(host) or HostState(host)
        if version > state.version:  # a lower one: the snapshot has not caught up with the last order
            cert = acme_names.cert_secrets(host, version)[0]
            expiry = self.store.not_after(cert) or 0.0  # gone: renew now
            state = replace(state, version=version, not_after=expiry,  # restarted: renewed when it was written
                            issued_at=state.issued_at or self.store.created(cert))
        return state

    def _order(self, host: str, service: str, versions: dict[str, int], now: float) -> HostState:
        state = self.states[host]
        self.order_times = acme_schedule.recent(self.order_times, now, self.policy)
        if not acme_schedule.order_allowed(self.order_times, now, self.policy):
            return replace(state, last_error=f"the issuer's own limit of {self.policy.max_orders} orders per "
                           f"{self.policy.window:.0f} s is reached", last_error_at=now, next_try=now + 60.0)
        self.order_times.append(now)
        published = []
        try:
            issued = self.client.issue((host,), lambda answers: self._publish(host, answers, published))
            if not self.may_issue():
                raise AcmeError(f"certificate for {host}: the issuer lease was lost during the order: "
                                "the certificate is not stored (the lease's holder orders its own)")
            version = self._next_version(host, state.version)
            cert, key = acme_names.cert_secrets(host, version)
            self.store.create(key, issued.key_pem.encode(), issued.not_after)
            self.store.create(cert, issued.chain_pem.encode(), issued.not_after)
            self.publisher.serve({**versions, host: version})
            versions[host] = version
            log.info("host %s: certificate v%d issued (expires %s)", host, version,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued.not_after)))
            return acme_schedule.succeeded(state, self.clock(), version, issued.not_after)
        except AcmeError as err:
            log.warning("host %s (service %s): %s; it keeps %s", host, service, err,
                        f"certificate v{state.version}" if state.version else "plain HTTP")
            return acme_schedule.failed(state, self.clock(), str(err), self.policy, err.error_type)
        finally:
            if published:
                self.publisher.answer(host, {})

    def _publish(self, host: str, answers: dict[str, str], published: list) -> None:
        published.append(host)
        self.publisher.answer(host, answers)
        missing = acme_probe.wait_answered(self.probe_urls, host, answers,
                                           time.monotonic() + self.propagation_timeout)
        if not self.may_issue():
            raise AcmeError(f"certificate for {host}: the issuer lease was lost while the answer propagated; "
                            "the ACME server was not asked to validate")
        if missing:
            raise AcmeError(f"certificate for {host}: the HTTP-01 answer did not reach every proxy within "
                            f"{self.propagation_timeout:.0f} s (not answered by {', '.join(missing)}); "
                            "the ACME server was not asked to validate")

    def _next_version(self, host: str, current: int) -> int:
        names = set(self.store.names())
        version = current + 1
        while acme_names.cert_secrets(host, version)[0] in names or acme_names.cert_secrets(host, version)[1] in names:
            version += 1
        return version

    def _cleanup(self, current: dict[str, int]) -> None:
        """Removes older versions and the certificates of hosts that no longer ask for one."""
        for name in acme_names.obsolete(self.store.names(), current):
            try:
                self.store.remove(name)
                log.info("removed %s (replaced, or its host no longer asks for a certificate)", name)
            except Exception as err:  # noqa: BLE001 - in use still (a Docker secret): next pass
                log.info("cannot remove %s yet: %s", name, err)

    def document(self) -> list[dict]:
        """Per host: what show --l7 and /metrics say."""
        return [{"host": h, "service": self.service_of.get(h, ""), "source": "acme", "version": s.version,
                 "not_after": s.not_after, "issued_at": s.issued_at, "last_error": s.last_error,
                 "last_error_at": s.last_error_at, "failures": s.failures, "next_try": s.next_try}
                for h, s in sorted(self.states.items())]
