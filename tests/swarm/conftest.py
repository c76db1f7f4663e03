"""The real swarm lab (ingressmesh.lab) as a session fixture: up once, down at the end.

It uses its own prefix, lab dir and subnet, so a developer's `make lab` is left alone.
Without root the tests are skipped, unless INGRESSMESH_REQUIRE_KERNEL=1 (make test): then they
fail, so CI cannot pass without running them."""
from __future__ import annotations

import dataclasses
import os

import pytest

from ingressmesh.lab import Lab, LabConfig

# Node2's docker_gwbridge is an operator's own subnet: its ingress_sbox is not at 172.18.0.2, so
# every routing test also shows the agent forwards published ports where Docker really put it.
TEST_CONFIG = LabConfig(lab_dir="/var/lib/ingressmesh/lab-test", prefix="imtest",
                        subnet="10.78.0", pool="10.201.0.0/16", nodes=3, managers=1,
                        gwbridges=((2, "172.30.0.0/16"),))
# The stack run has names of its own, so `make test` can run it beside the process run.
STACK_CONFIG = dataclasses.replace(TEST_CONFIG, lab_dir="/var/lib/ingressmesh/lab-stack", prefix="imstack",
                                   subnet="10.74.0", pool="10.206.0.0/16")

# How the mesh under test runs: "processes" (a controller and agents as host processes, so tests
# can stop, kill and restart them) or "stack" (`ingressmesh install --stack`: swarm services only).
# `make test` runs every lab test with processes, then the routing tests and test_stack_install.py
# again with the stack.
MESH_KIND = os.environ.get("INGRESSMESH_LAB_MESH", "processes")
STACK_L7_PORT = 8095


@pytest.fixture(scope="session")
def lab_root() -> None:
    """Skip (or fail under INGRESSMESH_REQUIRE_KERNEL=1) without root."""
    if os.geteuid() != 0:
        if os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
            pytest.fail("the swarm lab tests need root (INGRESSMESH_REQUIRE_KERNEL=1)")
        pytest.skip("the swarm lab tests need root")


@pytest.fixture(scope="session")
def lab(lab_root) -> Lab:
    """A 3-node swarm (node1 manager), both lab images on every node."""
    the_lab = Lab(STACK_CONFIG if MESH_KIND == "stack" else TEST_CONFIG)
    the_lab.down(grace=0)  # what a crashed earlier run may have left
    the_lab.up()
    try:
        yield the_lab
    finally:
        result = the_lab.down()
        assert not result["kept"], result["kept"]


@pytest.fixture(scope="session")
def mesh(lab):
    """ingressmesh on the lab (a controller on node1 and an agent on every node), the overlay
    network the tests share, all stopped at the end (before the lab goes down)."""
    from ingressmesh.testbed import l7_lab
    from ingressmesh.testbed.stack_mesh import StackMesh
    from ingressmesh.testbed.swarm_mesh import SwarmMesh
    if MESH_KIND not in ("processes", "stack"):
        pytest.fail(f"INGRESSMESH_LAB_MESH={MESH_KIND!r}: processes or stack")
    lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", "ovl")
    if MESH_KIND == "stack":  # with the L7 layer in the stack: proxies on 8095, controllers found by l7 deploy
        running = StackMesh(lab, l7_config=l7_lab.extension("default", "", STACK_L7_PORT)).up()
    else:
        running = SwarmMesh(lab).up()
    try:
        yield running
    finally:
        try:
            print(running.tails())  # the logs, for the CI output
        finally:
            running.down()
            running.remove_files()
