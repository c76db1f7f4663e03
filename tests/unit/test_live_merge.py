"""LiveMerge: the controller's incremental merge equals the whole merge after any change, costs
only the touched tasks when only tasks and reports moved, and reports each change by object."""
import dataclasses
import random

import pytest

from ingressmesh import model
from ingressmesh.controller.live_merge import LiveMerge
from ingressmesh.controller.merge import SinceTracker, merge
from ingressmesh.swarm.state import SwarmState

NODES = tuple(model.Node(f"n{i}", f"node{i}", f"192.168.0.{i}") for i in range(1, 4))
INGRESS = model.Network("ing", "ingress", "10.0.0.0/16", ingress=True)
OVL = model.Network("ovl", "ovl", "10.1.0.0/16")


def _service(i: int, port: bool = False) -> model.Service:
    ports = (model.PublishedPort("tcp", 8000 + i, 80),) if port else ()
    vips = (model.VirtualIP("ovl", f"10.1.0.{2 + i}"),) + ((model.VirtualIP("ing", f"10.0.0.{2 + i}"),) if port else ())
    return model.Service(f"s{i}", f"svc{i}", vips=vips, ports=ports)


def _task(n: int, rng: random.Random, services: int, address: int = None) -> model.Task:
    return model.Task(f"t{n}", f"s{rng.randrange(services)}", rng.choice(NODES).id, slot=n,
                      desired_state=rng.choice(("running", "running", "shutdown")),
                      current_state=rng.choice(("running", "running", "running", "starting")),
                      addresses=(model.NetworkAddress("ovl", f"10.1.1.{address if address is not None else n}"),))


def _report(node_id: str, containers: dict, lb_octet: int = 1) -> dict:
    index = int(node_id[1:])
    return {"node_id": node_id, "containers": containers,
            "lb_addresses": {"ovl": f"10.1.255.{index * lb_octet}", "ing": f"10.0.255.{index}"}}


class World:
    """A random swarm that changes one thing at a time; reports are always new objects."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.services = [_service(i, port=i % 3 == 0) for i in range(8)]
        self.tasks = {f"t{n}": _task(n, self.rng, 8) for n in range(40)}
        self.checked = frozenset({"s1", "s2", "s5"})
        self.health: dict = {node.id: {} for node in NODES}
        self.silent: set = set()
        self.lb_octet = 1
        self.hostile: dict = {}  # node id -> (network id, address) it claims on top of its own
        self.next_task = 40
        self.state = self._state()
        self.reports = self._reports()

    def _state(self) -> SwarmState:
        return SwarmState(NODES, (INGRESS, OVL), tuple(self.services), tuple(self.tasks.values()), self.checked)

    def _reports(self) -> dict:
        reports = {node.id: _report(node.id, dict(self.health[node.id]), self.lb_octet)
                   for node in NODES if node.id not in self.silent}
        for node_id, (network_id, address) in self.hostile.items():
            if node_id in reports:
                reports[node_id]["lb_addresses"][network_id] = address
        return reports

    def step(self) -> str:
        rng = self.rng
        kind = rng.choice(["health", "health", "health", "stopping", "task state", "task added", "task removed",
                           "task moved", "silent", "lb", "service", "checked", "clash", "readdress", "readdress",
                           "readdress", "same", "hostile", "hostile"])
        task = rng.choice(list(self.tasks.values())) if self.tasks else None
        if kind in ("health", "stopping") and task:
            entry = {"health": rng.choice(model.HEALTH_STATES), "stopping": kind == "stopping"}
            self.health[task.node_id][task.id] = entry
        elif kind == "task state" and task:
            self.tasks[task.id] = dataclasses.replace(task, current_state=rng.choice(("running", "shutdown")),
                                                      desired_state=rng.choice(("running", "shutdown")))
        elif kind == "task added":
            self.tasks[f"t{self.next_task}"] = _task(self.next_task, rng, len(self.services))
            self.next_task += 1
        elif kind == "task removed" and task:
            del self.tasks[task.id]
        elif kind == "task moved" and task:
            self.tasks[task.id] = dataclasses.replace(task, node_id=rng.choice(NODES).id)
        elif kind == "silent":
            self.silent ^= {rng.choice(NODES).id}
        elif kind == "lb":
            self.lb_octet = 3 - self.lb_octet
        elif kind == "service":
            i = rng.randrange(len(self.services))
            self.services[i] = _service(i, port=not self.services[i].ports)
        elif kind == "checked":
            self.checked = self.checked ^ {f"s{rng.randrange(len(self.services))}"}
        elif kind == "clash" and task:  # another task takes this one's address: one is refused
            other = rng.choice(list(self.tasks.values()))
            self.tasks[other.id] = dataclasses.replace(other, addresses=task.addresses)
        elif kind == "hostile":  # a node claims a VIP, a task's address, another node's, or stops
            node_id = rng.choice(NODES).id
            choice = rng.randrange(4)
            if choice == 0:
                vip = rng.choice(rng.choice(self.services).vips)
                self.hostile[node_id] = (vip.network_id, vip.address)
            elif choice == 1 and task:
                self.hostile[node_id] = ("ovl", task.addresses[0].address)
            elif choice == 2:
                self.hostile[node_id] = ("ovl", f"10.1.255.{int(rng.choice(NODES).id[1:]) * self.lb_octet}")
            else:
                self.hostile.pop(node_id, None)
        elif kind == "readdress":  # clashes end: every task gets an address of its own again
            for n, (task_id, each) in enumerate(sorted(self.tasks.items())):
                self.tasks[task_id] = dataclasses.replace(
                    each, addresses=(model.NetworkAddress("ovl", f"10.1.{2 + n // 200}.{n % 200}"),))
        if kind != "same":
            self.state = self._state() if kind != "health" and kind != "stopping" else self.state
            self.reports = self._reports() if kind not in ("task state", "task added", "task removed", "task moved",
                                                           "service", "checked", "clash", "readdress") else self.reports
        return kind


def _as_maps(cluster: model.Cluster) -> dict:
    return {kind: {obj.id: obj for obj in getattr(cluster, kind)} for kind in ("nodes", "networks", "services", "tasks")}


@pytest.mark.parametrize("seed", range(12))
def test_random_changes_match_the_whole_merge(seed):
    world = World(seed)
    live, tracker = LiveMerge(), SinceTracker()
    mirror = {kind: {} for kind in ("nodes", "networks", "services", "tasks")}  # built from Changes alone
    for step in range(150):
        now = 1000.0 + step
        changes = live.update(world.state, world.reports, now)
        expected = merge(world.state, world.reports, tracker, now)
        assert _as_maps(live.cluster()) == _as_maps(expected.cluster), f"step {step}"
        assert live.refused == expected.refused
        if changes is not None:
            for kind, ids in changes.remove.items():
                for obj_id in ids:
                    del mirror[kind][obj_id]
            for kind, objs in changes.set.items():
                mirror[kind].update({obj.id: obj for obj in objs})
            assert changes.refused == expected.refused
        assert mirror == _as_maps(expected.cluster), f"step {step}: the changes do not add up"
        world.step()


def test_a_health_report_re_merges_only_that_task():
    world = World(99)
    world.silent = set()
    world.state, world.reports = world._state(), world._reports()
    live = LiveMerge()
    live.update(world.state, world.reports, 1.0)
    assert live.whole_merges == 1
    task = next(t for t in live.view["tasks"].values() if t.service_id in world.checked)
    world.health[task.node_id][task.id] = {"health": "unhealthy", "stopping": False}
    world.reports = world._reports()
    if live.refused:  # a random clash refused something: the whole merge runs again by design
        pytest.skip("this seed starts with a refusal")
    changes = live.update(world.state, world.reports, 2.0)
    assert live.whole_merges == 1 and not changes.whole
    assert changes.set == {"tasks": [live.view["tasks"][task.id]]} and changes.remove == {}
    assert live.view["tasks"][task.id].health == "unhealthy"
    # A heartbeat that changes nothing: no change, no merge.
    world.reports = world._reports()
    assert live.update(world.state, world.reports, 3.0) is None and live.whole_merges == 1


def test_a_clash_falls_back_to_the_whole_merge_and_names_the_task():
    state = SwarmState(NODES, (INGRESS, OVL), (_service(1),),
                       (model.Task("a", "s1", "n1", addresses=(model.NetworkAddress("ovl", "10.1.1.1"),)),))
    reports = {n.id: _report(n.id, {}) for n in NODES}
    live = LiveMerge()
    live.update(state, reports, 1.0)
    clash = model.Task("b", "s1", "n2", addresses=(model.NetworkAddress("ovl", "10.1.1.1"),))
    changes = live.update(dataclasses.replace(state, tasks=state.tasks + (clash,)), reports, 2.0)
    assert changes.whole and set(live.view["tasks"]) == {"a"}
    assert any("task 'b'" in message and "10.1.1.1" in message for message in changes.refused)


def test_a_refused_lb_claim_does_not_make_every_update_a_whole_merge():
    state = SwarmState(NODES, (INGRESS, OVL), (_service(1),),
                       (model.Task("a", "s1", "n1", addresses=(model.NetworkAddress("ovl", "10.1.1.1"),)),))
    reports = {n.id: _report(n.id, {}) for n in NODES}
    reports["n1"]["lb_addresses"]["ovl"] = "10.1.0.3"  # svc1's VIP: refused, the service stays
    live = LiveMerge()
    live.update(state, reports, 1.0)
    assert "s1" in live.view["services"] and any("node 'node1' (n1)" in r and "VIP" in r for r in live.refused)
    reports = {**reports, "n1": {**reports["n1"], "containers": {"a": {"health": "healthy", "stopping": False}}}}
    changes = live.update(state, reports, 2.0)
    assert not changes.whole and live.whole_merges == 1 and live.view["tasks"]["a"].health == "healthy"
    assert live.update(state, reports, 3.0) is None and live.whole_merges == 1
    # the task leaves: node1 has no task on ovl any more, so no lb endpoint there
    changes = live.update(dataclasses.replace(state, tasks=()), reports, 4.0)
    assert changes.whole and any("node 'node1' (n1)" in r and "no load-balancer endpoint" in r for r in live.refused)
