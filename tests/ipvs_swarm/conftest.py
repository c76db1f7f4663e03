"""The swarm lab inside a kernel that has IPVS, next to Docker's own routing mesh.

`make ipvs-swarm` boots Debian's stock kernel under QEMU (scripts/kernel-lab), readies it as a
Docker host (scripts/kernel-lab-guest/swarm-host) and runs this directory in one pytest process.
Docker's IPVS mesh is live there, so it is both the oracle (what Docker alone does) and the
neighbour ingressmesh must take over from and hand back to.  Outside the kernel lab every test
here is skipped (fails under INGRESSMESH_REQUIRE_IPVS=1); `make test` runs it inside.

The measurements of each phase land in one JSON file ($KERNEL_LAB_SHARE/ipvs_swarm.json), from
which bench/side_by_side.py writes the side-by-side table after `make bench-side-by-side` (the
same run with every row measured: table_rows.py).
"""
from __future__ import annotations

import json
import os
import time

import pytest

from ingressmesh.dataplane import backends
from ingressmesh.lab import Lab, LabConfig
from ipvs_swarm_helpers import ensure_web

# Its own names, so nothing here can meet the host's labs; busybox and the proxy image (python3:
# the UDP echo service, the L7 proxy, the stack's agents), unpacked at `up` into every node from
# the ready store `make ipvs-swarm-images` built natively (image_store.py; without one they are
# imported into node1 only, whose image store nodes 2 and 3 start on: an import of the proxy
# image costs ~55 s under emulation alone; six imports at once took 525-677 s beside make test's
# other work); generous waits (dockerd takes ~20 s to start there).
IPVS_LAB = LabConfig(lab_dir="/var/lib/ingressmesh/lab-ipvs", prefix="imipvs", subnet="10.79.0",
                     pool="10.202.0.0/16", nodes=3, managers=1, images=("busybox", "proxy"), ready_timeout=300,
                     import_timeout=1200)
# No custom docker_gwbridge here (the host test lab's node2 has one): with node2's made on
# 172.30.0.0/16 the guest kernel locked up at swarm setup (soft lockup of both vCPUs in Docker's
# re-exec'd `exe` processes, run at dc6d276; not investigated).


def pytest_collection_modifyitems(config, items):
    """Everything here needs the kernel lab's IPVS kernel; say so once instead of failing later."""
    ok, why = backends.ipvs_available() if os.geteuid() == 0 else (False, "not root")
    if os.environ.get("KERNEL_LAB") == "1" and ok:
        return
    reason = f"needs the kernel lab (make ipvs-swarm): KERNEL_LAB={os.environ.get('KERNEL_LAB')}, IPVS: {why or 'yes'}"
    if os.environ.get("INGRESSMESH_REQUIRE_IPVS") == "1":
        raise pytest.UsageError(reason)
    for item in items:
        if "ipvs_swarm" in str(item.fspath):
            item.add_marker(pytest.mark.skip(reason=reason))


class Results:
    """Measurements per mesh and row, written as JSON after every test (a crash keeps the rest)."""

    def __init__(self, path: str):
        self.path = path
        self.data = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "kernel": os.uname().release, "cpus": os.cpu_count(), "rows": {}}

    def put(self, mesh: str, row: str, value) -> None:
        self.data["rows"].setdefault(row, {})[mesh] = value
        self.save()

    def save(self) -> None:
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


@pytest.fixture(scope="session")
def results() -> Results:
    share = os.environ.get("KERNEL_LAB_SHARE", "")
    return Results(os.path.join(share, "ipvs_swarm.json") if share else "")


@pytest.fixture(scope="session")
def lab() -> Lab:
    the_lab = Lab(IPVS_LAB, log=lambda msg: print(f"lab: {msg}", flush=True))
    the_lab.down(grace=0)
    the_lab.up()
    try:
        yield the_lab
    finally:
        result = the_lab.down()
        assert not result["kept"], result["kept"]


@pytest.fixture(scope="session")
def web(lab) -> dict:
    """The one service every module measures (ipvs_swarm_helpers.ensure_web)."""
    return ensure_web(lab)


@pytest.fixture(scope="session")
def meshes(lab):
    """The ingressmesh processes a test started, by backend: the IPVS one serves
    test_next_to_dockers_mesh.py, the L7 test and the on-stop hand-back in turn.  Whatever a
    failed test left running is stopped at the end of the session."""
    started: dict = {}
    yield started
    for mesh in started.values():
        print(mesh.tails())
        mesh.down()
