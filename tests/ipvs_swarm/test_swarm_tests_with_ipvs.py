"""tests/swarm's routing, health and rolling-update tests with the ipvs backend on a real swarm
(issue 18, point 4): the same test functions, imported, on the lab this directory already brought
up inside a kernel with IPVS, next to Docker's own IPVS mesh.  Runs last (file order), after the
other modules' agents have stopped: this module starts its own, with --backend ipvs.

The probes (tests/swarm/swarm_helpers.py) read whichever backend programmed a namespace:
ingressmesh's own IPVS services (its fwmarks; Docker's are not counted), else the nft maps.  Under
emulation waits are x SLOWDOWN and latency bounds x LATENCY_SLOWDOWN; the real-speed bounds are
the host's run.  Left out here (docs/tests.md says why): the scale test (its 2 s bound measures
the probe's own sweep under emulation; 2 min), the attachable-container VIP test (1 min; the VIP
test below covers a container's VIP), and the dnsrr/host-mode test (it reads the nft backend's
maps by name), and the starting-task test (2 min; health_rows.py measures a starting task with
each mesh in this same run).
"""
from __future__ import annotations

import os
import sys
import time

import pytest

from ingressmesh.testbed.swarm_mesh import SwarmMesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "swarm"))
from ipvs_swarm_helpers import STOP_TIMEOUT  # noqa: E402
from swarm_helpers import NETWORK, SLOWDOWN, wait_for  # noqa: E402
from test_mesh_health import (test_rolling_update_start_first_under_load_fails_nothing,  # noqa: E402,F401
                              test_unhealthy_task_leaves_every_node_within_one_second)
from test_mesh_routing import (test_published_port_on_every_node_reaches_every_task,  # noqa: E402,F401
                               test_vip_and_docker_dns_from_a_container_on_node1, web)


@pytest.fixture(scope="module")
def mesh(lab):
    """ingressmesh with the ipvs backend on the already-up lab, plus the python image the VIP and
    rolling-update tests run (the rig imports busybox and the proxy image at `up`)."""
    started = time.monotonic()
    for n in lab.config.node_numbers:
        lab.import_image(n, "python")
    print(f"python image imported into every node in {time.monotonic() - started:.0f} s", flush=True)
    # The other modules made it; alone (pytest -k), this module makes it itself.
    lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", NETWORK, check=False)
    # The rig's own `web` (test_next_to_dockers_mesh.py) has the name and port 8080 the imported
    # tests' `web` fixture creates: it goes first.
    lab.docker(1, "service", "rm", "web", check=False)
    # (Its tasks drain for their stop grace meanwhile; the new web's tasks are new containers.)
    wait_for("the rig's web service gone",
             lambda: lab.docker(1, "service", "inspect", "web", check=False).returncode != 0,
             timeout=30 * SLOWDOWN, interval=1)
    running = SwarmMesh(lab, backend="ipvs", stop_timeout=STOP_TIMEOUT).up(timeout=30 * SLOWDOWN)
    try:
        yield running
    finally:
        print(running.tails())
        running.down()
