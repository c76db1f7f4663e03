"""Fixtures for the real-kernel conformance suite: a testbed in namespaces and a mesh on it.

The backend under test is a parameter: INGRESSMESH_BACKEND=nft (default) or another name
registered in BACKENDS, so the same behaviours run against every data plane.
Without root the suite is skipped, unless INGRESSMESH_REQUIRE_KERNEL=1 (set by `make test`),
which turns the skip into a failure so CI can never pass without running it.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable

import pytest

from ingressmesh.dataplane.apply import NodeApplier, kernel_nft_backend
from ingressmesh.dataplane.layout import Layout
from ingressmesh.netns import Netns
from ingressmesh.ipvs.kernel import IpvsError
from ingressmesh.nft.errors import NftError
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import scenario_cluster
from ingressmesh.testbed.topology import Testbed


@dataclass(frozen=True)
class BackendKit:
    """What the suite needs to know about one backend."""
    make: Callable  # Netns -> backend
    error: object  # exception type(s) the backend raises when the kernel refuses a change
    refused_change: Callable  # backend -> None: send a change the kernel itself must refuse


def _nft_refused_change(backend) -> None:
    # nft parses all of it; the kernel refuses the batch (a key re-added with another value),
    # so the valid deletion and addition before it must not happen either.
    backend.runner.run_script(
        "delete element ip ingressmesh vip_backends { 10.0.1.2 . 0 }\n"
        "add element ip ingressmesh vip_rejects { 10.0.1.7 }\n"
        "add element ip ingressmesh vip_backends { 10.0.1.2 . 1 : 10.0.1.99 }\n")


def _ipvs_refused_change(backend) -> None:
    # Same idea for the IPVS backend's mark table: 10.0.1.2 already has a different mark.
    backend.runner.run_script(
        "delete element ip ingressmesh vip_rejects { 10.0.1.3 }\n"
        "add element ip ingressmesh vip_rejects { 10.0.1.7 }\n"
        "add element ip ingressmesh vip_marks { 10.0.1.2 : 0x4d45ffff }\n")


def _ipvs_backend(netns):
    from ingressmesh.ipvs.backend import IpvsBackend
    return IpvsBackend(netns)


BACKENDS = MappingProxyType({
    "nft": BackendKit(kernel_nft_backend, NftError, _nft_refused_change),
    "ipvs": BackendKit(_ipvs_backend, (IpvsError, NftError), _ipvs_refused_change),
})


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
            pytest.fail("the real-kernel suite must run as root (INGRESSMESH_REQUIRE_KERNEL=1)")
        pytest.skip("needs root: network namespaces and nftables")


@pytest.fixture(scope="session")
def backend_kit() -> BackendKit:
    name = os.environ.get("INGRESSMESH_BACKEND", "nft")
    if name not in BACKENDS:
        pytest.fail(f"INGRESSMESH_BACKEND={name!r} is not one of {sorted(BACKENDS)}")
    return BACKENDS[name]


@pytest.fixture(scope="session")
def backend_factory(backend_kit):
    return backend_kit.make


class Mesh:
    """The testbed plus one NodeApplier per node, kept across applies so diffs are exercised."""

    def __init__(self, bed: Testbed, backend_factory):
        self.bed = bed
        self.appliers = {i: NodeApplier(Layout(host=bed.node_ns(i), ingress=bed.ingress_ns(i),
                                               lb=bed.lb_ns(i)), backend_factory)
                         for i in range(1, bed.nodes + 1)}

    def cluster(self, overrides=None, services=None):
        return scenario_cluster(self.bed, overrides, services)

    def apply(self, overrides=None, now=None, services=None, source_ip="snat"):
        """Plan every node for the scenario and apply; returns {node: ApplyReport}.  `source_ip`:
        the agents' --source-ip default (plan_source_ip.py)."""
        cluster = self.cluster(overrides, services)
        options = PlanOptions(now=time.time() if now is None else now, source_ip=source_ip)
        reports = {i: applier.apply(plan_node(cluster, f"node{i}", options))
                   for i, applier in self.appliers.items()}
        for i, report in reports.items():
            assert report.ok, f"node{i}: {report.errors}"
        return reports


@pytest.fixture(scope="session")
def root():
    """Depend on this to run only as root (or fail under INGRESSMESH_REQUIRE_KERNEL=1)."""
    _require_root()


@pytest.fixture
def scratch(root):
    """A fresh, empty network namespace of our own (a Netns), deleted afterwards."""
    name = f"imsc-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Netns.from_ref(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def testbed(root):
    bed = Testbed().up()
    yield bed
    bed.down()


@pytest.fixture(scope="module")
def mesh_module(testbed, backend_factory):
    return Mesh(testbed, backend_factory)


@pytest.fixture
def mesh(mesh_module):
    """Every test starts from the default scenario: t1..t3 healthy, t4 starting."""
    mesh_module.apply()
    return mesh_module
