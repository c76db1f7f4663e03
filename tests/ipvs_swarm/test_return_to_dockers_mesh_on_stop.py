"""The IPVS phase's hand-back (issue 18, point 3): the agents run with `--on-stop cleanup`
(test_next_to_dockers_mesh.py restarted them so, as a systemd unit may run them) and are stopped
under load; Docker's mesh then takes every connection.  A file of its own so that it runs after
test_proxy_and_health_with_ipvs.py (file order) when a session runs both (the side-by-side
benchmark): one IPVS mesh serves both, instead of a second one started and stopped under
emulation (~3 min)."""
from __future__ import annotations

from handing_back import hand_back


def test_agents_stopping_with_their_cleanup_policy_hand_the_ipvs_mesh_back(lab, web, results, meshes):
    hand_back(lab, web, results, meshes, "ipvs", "on-stop")
