"""The delta protocol end to end on a real socket: store → /v1/snapshot?delta=1 → client →
ClusterFollower.  Deltas add up to the whole snapshot; a lost delta, an agent too far behind,
an agent joining late and a controller restart mid-stream all end on the whole snapshot."""
from __future__ import annotations

import copy
import json
import random

import pytest

from ingressmesh import delta, snapshot
from ingressmesh.agent.cluster_follower import ClusterFollower
from ingressmesh.agent.controller_client import ControllerClient, Update
from ingressmesh.controller import store as store_module
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import scenario_cluster
from ingressmesh.testbed.topology import Testbed

TOKEN = "controller-test-token-0123456789"
NOW = 1000.0
OPTIONS = PlanOptions(now=NOW)


def _base() -> dict:
    data = snapshot.to_dict(scenario_cluster(Testbed(prefix="unit")))
    data["refused"] = []
    return data


def _mutate(data: dict, rng: random.Random, base: dict) -> dict:
    data = copy.deepcopy(data)
    tasks = data["tasks"]
    choice = rng.choice(("health", "health", "drain", "remove", "readd", "label", "refused", "lb"))
    if choice == "health" and tasks:
        rng.choice(tasks)["health"] = rng.choice(("healthy", "unhealthy", "starting", "none"))
    elif choice == "drain" and tasks:
        rng.choice(tasks)["desired_state"] = "shutdown"
    elif choice == "remove" and len(tasks) > 1:
        tasks.remove(rng.choice(tasks))
    elif choice == "readd":
        missing = [t for t in base["tasks"] if t["id"] not in {x["id"] for x in tasks}]
        if missing:
            tasks.append(rng.choice(missing))
    elif choice == "label":
        rng.choice(data["services"])["labels"] = {"io.ingressmesh.lb.scheduler": rng.choice(("rr", "sh"))}
    elif choice == "refused":
        data["refused"] = [f"service x{rng.randrange(3)}: refused"]
    else:  # a node's lb endpoint moves: nodes and networks take the whole path on the agent
        network = next(n for n in data["networks"] if n["lb_addresses"])
        entry = network["lb_addresses"][0]
        entry["address"] = entry["address"].rsplit(".", 1)[0] + f".{rng.choice((250, 251))}"
    return data


class Api:
    def __init__(self, store: SnapshotStore):
        self.store = store
        self.server = ControllerServer(store, lambda report: None, TOKEN, ControllerMetrics(), ("127.0.0.1", 0)).start()
        self.client = ControllerClient([self.server.url], TOKEN)

    def close(self):
        self.client.close()
        self.store.close()
        self.server.stop()


@pytest.fixture
def api():
    made = Api(SnapshotStore())
    yield made
    made.close()


def _follow(follower: ClusterFollower, client: ControllerClient) -> Update:
    update = client.follow_update(follower.since(), 0, epoch=follower.epoch)
    if update is None:  # the changes cancelled out: no new version
        return Update(follower.version)
    if not follower.take_update(update, OPTIONS):  # a delta from another version: whole next
        update = client.follow_update(follower.since(), 0, epoch=follower.epoch)
        assert update.cluster is not None and follower.take_update(update, OPTIONS)
    return update


def _same_as_whole(follower: ClusterFollower, store: SnapshotStore) -> None:
    _, whole = store.current()
    fresh = ClusterFollower("node1", clock=lambda: NOW)  # arrivals stamped alike: drains end alike
    fresh.take(json.loads(json.dumps(whole)), OPTIONS)
    assert follower.raw == fresh.raw
    assert follower.plan(OPTIONS) == fresh.plan(OPTIONS)
    assert fresh.plan(OPTIONS) == plan_node(fresh.planner.cluster(), "node1", OPTIONS)


@pytest.mark.parametrize("seed", range(4))
def test_random_changes_followed_by_deltas_equal_the_whole_snapshot(api, seed):
    rng, base = random.Random(seed), _base()
    follower, data = ClusterFollower("node1", clock=lambda: NOW), base
    api.store.publish(data)
    first = _follow(follower, api.client)
    assert first.cluster is not None and follower.full_syncs == 1  # joining: the whole snapshot
    kinds = []
    for step in range(40):
        for _ in range(rng.choice((1, 1, 2, 5))):  # the agent sometimes misses versions: composed
            data = _mutate(data, rng, base)
            api.store.publish(data)
        update = _follow(follower, api.client)
        kinds.append("delta" if update.delta is not None else "whole" if update.cluster is not None else "none")
        assert follower.version == api.store.version
        _same_as_whole(follower, api.store)
    assert kinds.count("delta") >= 25 and "whole" not in kinds, kinds


def test_a_lost_delta_makes_the_agent_ask_for_the_whole_snapshot(api):
    base = _base()
    api.store.publish(base)
    follower = ClusterFollower("node1", clock=lambda: NOW)
    _follow(follower, api.client)
    held = follower.version
    api.store.publish(_mutate(base, random.Random(1), base))
    api.store.publish(_mutate(base, random.Random(2), base))
    # The agent receives the delta from held+1 (as if the one before was lost on the way).
    body = json.loads(api.store.encoded_delta(held + 1, api.store.version))
    stray = Update(body["version"], delta=body["delta"], since=body["since"], epoch=body["epoch"])
    assert follower.take_update(stray, OPTIONS) is False and follower.since() == 0
    update = api.client.follow_update(follower.since(), 0)
    assert update.cluster is not None and follower.take_update(update, OPTIONS)
    _same_as_whole(follower, api.store)


def test_an_agent_too_far_behind_gets_the_whole_snapshot(api, monkeypatch):
    base = _base()
    api.store.publish(base)
    follower = ClusterFollower("node1", clock=lambda: NOW)
    _follow(follower, api.client)
    rng, data = random.Random(3), base
    for _ in range(store_module.LOG_VERSIONS + 5):
        data = _mutate(data, rng, base)
        data["refused"] = [f"version {api.store.version}"]  # every publish is a new version
        api.store.publish(data)
    update = api.client.follow_update(follower.since(), 0)
    assert update.cluster is not None  # its version fell out of the log
    assert follower.take_update(update, OPTIONS)
    _same_as_whole(follower, api.store)
    late = ClusterFollower("node1", clock=lambda: NOW)  # an agent joining now: the whole snapshot
    assert late.since() == 0 and _follow(late, api.client).cluster is not None and late.raw == follower.raw


def test_a_delta_as_large_as_the_snapshot_comes_whole(api):
    base = _base()
    api.store.publish(base)
    follower = ClusterFollower("node1", clock=lambda: NOW)
    _follow(follower, api.client)
    changed = copy.deepcopy(base)  # 70 new services: more than 64 objects and half the snapshot
    template = dict(changed["services"][0], vips=[], ports=[])
    changed["services"] += [dict(template, id=f"extra{n}", name=f"extra{n}") for n in range(70)]
    api.store.publish(changed)
    assert api.client.follow_update(follower.since(), 0).cluster is not None


def test_a_controller_restarted_mid_stream_sends_the_whole_snapshot():
    base = _base()
    first = Api(SnapshotStore(clock=lambda: 1000.0))
    follower = ClusterFollower("node1", clock=lambda: NOW)
    try:
        first.store.publish(base)
        _follow(follower, first.client)
        changed = copy.deepcopy(base)
        changed["tasks"][0]["health"] = "unhealthy" if changed["tasks"][0]["health"] != "unhealthy" else "healthy"
        first.store.publish(changed)
        assert _follow(follower, first.client).delta is not None
    finally:
        first.close()
    second = Api(SnapshotStore(clock=lambda: 1000.5))  # a fresh controller: its own numbering
    try:
        second.store.publish(changed)  # even the same content: a new numbering
        update = _follow(follower, second.client)
        assert update.cluster is not None  # the agent's version is not in the new controller's log
        _same_as_whole(follower, second.store)
    finally:
        second.close()


def test_a_bad_delta_is_refused_by_name_and_the_whole_snapshot_follows(api):
    base = _base()
    api.store.publish(base)
    follower = ClusterFollower("node1", clock=lambda: NOW)
    _follow(follower, api.client)
    before = follower.plan(OPTIONS)
    task = dict(base["tasks"][0], service_id="no-such-service")
    bad = Update(follower.version + 1, delta={"set": {"tasks": [task]}, "remove": {}, "meta": None},
                 since=follower.version, epoch=follower.epoch)
    with pytest.raises(snapshot.SnapshotError, match="no-such-service"):
        follower.take_update(bad, OPTIONS)
    assert follower.plan(OPTIONS) == before and follower.since() == 0
    first = base["tasks"][0]
    for hostile in ({"set": [], "remove": {}}, {"set": {"tasks": [{"no": "id"}]}, "remove": {}},
                    {"set": {"pods": []}, "remove": {}}, "text",
                    {"set": {"tasks": [first, first]}, "remove": {}},  # one id twice
                    {"set": {"tasks": [first]}, "remove": {"tasks": [first["id"]]}}):  # set and removed
        with pytest.raises(snapshot.SnapshotError, match="delta"):
            follower.take_update(Update(follower.version + 1, delta=hostile, since=follower.version,
                                        epoch=follower.epoch), OPTIONS)
    assert follower.plan(OPTIONS) == before


def test_deltas_compose_and_apply_like_the_whole(api):
    rng, base = random.Random(11), _base()
    for _ in range(30):
        a, b, c = base, _mutate(base, rng, base), None
        c = _mutate(b, rng, base)
        (oa, ma), (ob, mb), (oc, mc) = delta.split(a), delta.split(b), delta.split(c)
        composed = delta.compose(delta.diff(oa, ma, ob, mb), delta.diff(ob, mb, oc, mc))
        objects = {k: dict(v) for k, v in oa.items()}
        meta = delta.apply(objects, ma, composed)
        assert objects == oc and meta == mc
        base = c


def test_an_agent_failing_over_to_a_controller_with_the_same_numbers_gets_the_whole_snapshot():
    """Two controllers started in the same millisecond number their versions alike: a delta
    from the second to a version the agent got from the first would apply to the wrong base."""
    base = _base()
    first, second = Api(SnapshotStore(clock=lambda: 1000.0)), Api(SnapshotStore(clock=lambda: 1000.0))
    follower = ClusterFollower("node1", clock=lambda: NOW)
    try:
        first.store.publish(base)
        other = copy.deepcopy(base)
        other["tasks"] = other["tasks"][1:]  # the second controller does not have one task yet
        second.store.publish(other)
        _follow(follower, first.client)
        assert follower.version == second.store.version  # the same number, different content
        changed = copy.deepcopy(other)
        changed["refused"] = ["something new"]
        second.store.publish(changed)
        update = second.client.follow_update(follower.since(), 0, epoch=follower.epoch)
        assert update.cluster is not None and update.epoch == second.store.epoch != first.store.epoch
        assert follower.take_update(update, OPTIONS)
        _same_as_whole(follower, second.store)
    finally:
        first.close()
        second.close()
