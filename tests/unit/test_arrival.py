"""Drain timing does not depend on the controller's and the agent's clocks agreeing."""
import copy

import pytest

from ingressmesh import snapshot
from ingressmesh.agent.cluster_follower import ClusterFollower
from ingressmesh.plan import DRAINING, PlanOptions
from ingressmesh.testbed.cluster import scenario_cluster
from ingressmesh.testbed.topology import Testbed

GRACE = 10.0
AGENT_NOW = 5000.0


def _states(follower, now):
    plan = follower.plan(PlanOptions(now=now, drain_grace=GRACE))
    return {b.task_id: b.state for ns in plan.namespaces for e in ns.vips + ns.ports for b in e.backends}


@pytest.mark.parametrize("skew", [-15.0, 0.0, 15.0, 3600.0])
def test_a_drain_lasts_the_grace_period_on_the_agents_clock_whatever_the_controllers(skew):
    """The controller's clock is `skew` seconds ahead of the agent's (negative: behind)."""
    local = [AGENT_NOW]
    follower = ClusterFollower("node1", clock=lambda: local[0])
    data = snapshot.to_dict(scenario_cluster(Testbed(prefix="unit")))
    for task in data["tasks"]:
        task["since"] = AGENT_NOW + skew - 100  # on the controller's clock
    follower.take(data, PlanOptions(now=AGENT_NOW, drain_grace=GRACE))
    task_id = next(t["id"] for t in data["tasks"] if t["health"] in ("healthy", "none"))
    assert _states(follower, AGENT_NOW)[task_id] == "active"
    stopping = copy.deepcopy(data)
    victim = next(t for t in stopping["tasks"] if t["id"] == task_id)
    victim["desired_state"], victim["since"] = "shutdown", AGENT_NOW + skew  # stamped by the controller
    local[0] = AGENT_NOW + 0.05  # it arrives here a moment later
    follower.take(stopping, PlanOptions(now=local[0], drain_grace=GRACE))
    assert _states(follower, AGENT_NOW + 0.1).get(task_id) == DRAINING
    assert _states(follower, AGENT_NOW + GRACE - 0.1).get(task_id) == DRAINING  # a full grace period
    assert task_id not in _states(follower, AGENT_NOW + GRACE + 0.1)  # and no longer
