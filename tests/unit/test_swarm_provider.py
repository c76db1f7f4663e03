"""The provider and the local-facts follower against fake Docker clients: outages keep the last
good state and name the endpoint; events drive re-reads; nothing is reported before a first read."""
import json
import pathlib
import threading
import time

from ingressmesh.swarm.local import LocalFacts
from ingressmesh.swarm.provider import PollPacing, SwarmProvider

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "swarm_api.json").read_text())
FAST = PollPacing(busy_interval=0.05, idle_interval=0.05, busy_window=1.0, min_spacing=0.01)


def _until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


class FakeDocker:
    """docker.APIClient look-alike over the recording; `down` makes every call fail."""

    def __init__(self, data, events=()):
        self.data, self.down, self.closed = dict(data), False, threading.Event()
        self.events_to_send = list(events)

    def _check(self):
        if self.down:
            raise ConnectionError("connection refused")

    def nodes(self):
        self._check()
        return self.data["nodes"]

    def networks(self, filters=None):
        self._check()
        return self.data["networks"] if filters is None else self.data["node_networks"]

    def services(self):
        self._check()
        return self.data["services"]

    def tasks(self):
        self._check()
        return self.data["tasks"]

    def containers(self, filters=None):
        self._check()
        return self.data["node_containers"]

    def inspect_container(self, container_id):
        return self.data["node_inspect"][container_id]

    def inspect_network(self, network_id):
        return next(n for n in self.data["node_networks"] if n["Id"] == network_id)

    def events(self, filters=None, decode=True):
        self._check()
        yield from self.events_to_send
        self.events_to_send = []
        self.closed.wait(30)  # a quiet stream until the test ends

    def close(self):
        self.closed.set()


def test_provider_keeps_the_last_good_state_through_an_outage_and_names_the_endpoint():
    api = FakeDocker(DATA)
    states, reads = [], []
    provider = SwarmProvider(lambda: api, "unix:///fake/manager.sock", states.append, FAST,
                             on_read=lambda seconds, error: reads.append(error))
    provider.start()
    try:
        assert _until(lambda: states)
        good = provider.state
        api.down = True
        assert _until(lambda: provider.last_error)
        assert provider.last_error.startswith("unix:///fake/manager.sock: ") and "refused" in provider.last_error
        assert provider.state is good and len(states) == 1  # nothing published from a failed read
        api.down = False
        api.data["tasks"] = DATA["tasks"][:3]
        assert _until(lambda: len(states) == 2)
        assert len(provider.state.tasks) < len(good.tasks) and provider.last_error == ""
        assert any(reads) and reads[-1] is None
    finally:
        api.down = False
        provider.stop()
        api.close()


def test_local_facts_report_nothing_before_the_first_read_then_follow_events():
    task_id = next(iter(c["Labels"]["com.docker.swarm.task.id"] for c in DATA["node_containers"]))
    events = [{"Type": "container", "Action": "health_status: unhealthy",
               "Actor": {"Attributes": {"com.docker.swarm.task.id": task_id}}}]
    api = FakeDocker(DATA, events)
    reports = []
    facts = LocalFacts(lambda: api, "unix:///fake/node.sock", "node-x", reports.append, refresh=30)
    assert facts.report() is None  # before the first full read: no report that says "no containers"
    facts.start()
    try:
        assert _until(lambda: any(r["containers"].get(task_id, {}).get("health") == "unhealthy" for r in reports))
        first = reports[0]
        assert first["node_id"] == "node-x" and len(first["containers"]) == 3
        assert sorted(first["lb_addresses"].values()) == ["10.200.0.4", "10.200.1.6"]
        facts._on_event({"Type": "container", "Action": "kill",
                         "Actor": {"Attributes": {"com.docker.swarm.task.id": task_id, "signal": "15"}}})
        assert facts.report()["containers"][task_id]["stopping"] is True
    finally:
        facts.stop()
        api.close()
