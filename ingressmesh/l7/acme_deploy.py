"""The ACME issuer inside `l7 deploy --watch`: one Issuer per proxy service of l7.toml.

The stack runs `l7 deploy` as one replica constrained to managers; when its task or manager
goes, Swarm starts another, which reads the served versions back from the proxy service's labels
(and the secrets' names and expiry labels) and orders nothing that is already issued.  While two
run (a start-first update, a manager cut off), only the holder of the issuer lease
(acme_lease.py) orders and publishes labels.  The account key is derived from the cluster secret it is given
(acme_account.py), so the successor is the same ACME account.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from . import rollout
from .acme_account import derived_key_pem
from .acme_issuer import Issuer
from .acme_lease import IssuerLease
from .acme_settings import AcmeSettings
from .acme_swarm import DockerLeaseStore, DockerSecretStore, ProxyLabelPublisher

log = logging.getLogger(__name__)
PROBES_PER_REPLICA = 3  # each node's published port reaches one replica per connection
PROPAGATION = 30.0  # seconds for a published answer to reach every proxy once l7 deploy pushed it


def propagation_timeout(replicas: int) -> float:
    """How long the issuer waits for a challenge answer on every node: l7 deploy holds a label
    change while Swarm rolls the proxies (proxy_service.py), e.g. the roll that attaches a new
    service's network, so a roll's turns (rollout.TURN per replica) come on top."""
    return PROPAGATION + max(1, replicas) * rollout.TURN


def probe_urls(nodes: list[dict], published_port: int, replicas: int) -> tuple[str, ...]:
    """Where the issuer checks a challenge is answered before the ACME server validates: the
    published HTTP port on every node (the way the ACME server comes in), each asked several
    times per replica because the routing mesh spreads connections over the replicas."""
    addresses = sorted({(n.get("Status") or {}).get("Addr", "") for n in nodes} - {"", "0.0.0.0"})
    return tuple(f"http://{a}:{published_port}" for a in addresses
                 for _ in range(max(1, replicas) * PROBES_PER_REPLICA))


def routes(document: Callable[[], list], health, state: Callable[[], str] = lambda: "") -> dict:
    """What `l7 deploy --listen` adds for the issuer, `document` giving its per-host rows: GET /acme
    (version, expiry, last renewal, last error, next try; `state`: whether this one issues or
    stands by), GET /metrics (IssuerMetrics, a registry per scrape) and the failing hosts on
    `health`'s /healthz (DeployHealth)."""
    from .metrics import IssuerMetrics
    health.watch_acme(document)

    def metrics(request):
        content_type, body = IssuerMetrics().observe(document()).render()
        return 200, body, content_type
    return {("GET", "/acme"): lambda request: (200, {"hosts": document(), "issuer": state()}, None),
            ("GET", "/metrics"): metrics}


class DeployIssuers:
    def __init__(self, acme: AcmeSettings, settings, services, secret: bytes,
                 push: Callable[[], None], stack_labels: dict, holder: str):
        """`services`: l7 deploy's ProxyServices; `push` runs l7 deploy's pass at once (it reads
        `labels()`); `secret`: the cluster secret the account key is derived from; `holder`:
        this l7 deploy's name in the issuer lease (several may run: only the holder issues)."""
        store = DockerSecretStore(services.api, stack_labels)
        self.services, self.lease = services, IssuerLease(DockerLeaseStore(services.api, stack_labels), holder)
        self._term = 0  # the lease term whose labels the publishers hold (0: none yet)
        self._lease_thread: Optional[threading.Thread] = None
        key = derived_key_pem(secret, acme.directory_url)
        try:
            nodes = services.nodes()
        except Exception as err:  # noqa: BLE001 - no node list: the issuer waits for no probe
            log.warning("ACME: the nodes cannot be read (%s): challenges are not checked before validation", err)
            nodes = []
        self.publishers, self.issuers = {}, {}
        for item in settings:
            current = services.current(item.name) or {}
            self.publishers[item.name] = ProxyLabelPublisher((current.get("Spec") or {}).get("Labels") or {}, push)
            port = item.published_port or 80
            self.issuers[item.name] = Issuer(acme, store, self.publishers[item.name], item.name,
                                             probe_urls(nodes, port, item.replicas), account_key=key,
                                             service_cluster=item.service_cluster,
                                             propagation_timeout=propagation_timeout(item.replicas),
                                             may_issue=self._holding)

    def _holding(self) -> bool:
        """Holds the lease, in the term whose labels the publishers were read back in."""
        return self.lease.valid() and self._term == self.lease.term

    def labels(self) -> Optional[dict[str, dict[str, str]]]:
        """The issuer's labels per proxy service (deployer.deploy_once's `issuer`); None while
        another l7 deploy holds the lease (the labels the proxy services carry are kept), or
        before this one has read back what was published before it took the lease."""
        if not self._holding():
            return None
        return {name: dict(p.labels) for name, p in self.publishers.items()}

    def run_once(self, cluster) -> None:
        if not self.lease.valid():
            return
        term = self.lease.term
        if term != self._term:  # took the lease (again): start from what others published meanwhile
            for name, publisher in self.publishers.items():
                publisher.reload(((self.services.current(name) or {}).get("Spec") or {}).get("Labels") or {})
            self._term = term
        for name, issuer in self.issuers.items():
            if not self._holding():
                return  # lost meanwhile (not renewed within ttl / 2): the next holder goes on
            try:
                issuer.run_once(cluster.services)
            except Exception as err:  # noqa: BLE001 - Docker or network trouble: named, next pass
                log.warning("ACME issuer for %s: %s; trying again at the next pass", name, err)

    def document(self) -> list[dict]:
        return [row for issuer in self.issuers.values() for row in issuer.document()]

    def state(self) -> str:
        return self.lease.describe()

    def run(self, stop: threading.Event, latest: Callable[[], object], interval: float = 10.0) -> None:
        """Every `interval` seconds: a pass over the latest snapshot, until `stop`; the lease is
        kept by a thread of its own (a pass with an order may outlast its renewal period)."""
        self.lease.step()  # so the first pass need not wait for the lease thread
        self._lease_thread = threading.Thread(target=self.lease.run, args=(stop,), daemon=True, name="acme-lease")
        self._lease_thread.start()
        while not stop.is_set():
            self.run_once(latest())
            stop.wait(interval)

    def release(self) -> None:
        """On a clean stop (after `stop` is set): the successor takes the lease at once.  The lease
        thread ends first, so no step under way renews what is released."""
        if self._lease_thread is not None:
            self._lease_thread.join(10)
        self.lease.release()
