"""Debian's pebble (a test ACME server) and pebble-challtestsrv (its mock DNS) on loopback,
for the ACME tests; and a publisher that puts the issuer's labels into the stand-in
controller's snapshot, the path every proxy replica follows."""
from __future__ import annotations

import copy

from ingressmesh.l7.acme_swarm import ProxyLabelPublisher
from ingressmesh.testbed.pebble import Pebble, binaries  # noqa: F401 - the l7 tests import them from here

PROXY_SERVICE = "proxy"  # the proxies' own service (--proxy-service): the issuer's labels count only there


class SnapshotPublisher(ProxyLabelPublisher):
    """l7 deploy's publisher: the issuer's labels on the proxy service ("proxy") of the stand-in
    controller's snapshot, published at each change (as l7 deploy updates the swarm service,
    which the controller then snapshots)."""

    def __init__(self, controller, cluster: dict):
        self.controller, self.cluster = controller, copy.deepcopy(cluster)
        self.cluster["services"].append({"id": PROXY_SERVICE, "name": PROXY_SERVICE,
                                         "labels": {"io.ingressmesh.l7.proxy": "default"}})
        super().__init__({}, self._publish)
        self._publish()

    def _publish(self) -> None:
        proxy = next(s for s in self.cluster["services"] if s["name"] == PROXY_SERVICE)
        proxy["labels"] = {"io.ingressmesh.l7.proxy": "default", **self.labels}
        self.controller.publish(copy.deepcopy(self.cluster))

    def services(self):
        from ingressmesh import snapshot
        return snapshot.from_dict(copy.deepcopy(self.cluster)).services
