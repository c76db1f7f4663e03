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


def _kill(task_id: str, sig: str, container: str = "c1") -> dict:
    return {"Type": "container", "Action": "kill",
            "Actor": {"ID": container, "Attributes": {"com.docker.swarm.task.id": task_id, "signal": sig}}}


def _ready_facts(api):
    facts = LocalFacts(lambda: api, "unix:///fake/node.sock", "node-x", lambda report: None, refresh=30)
    facts._resync()
    return facts


def test_a_signal_is_not_a_stop_only_a_stopping_signal_is():
    api = FakeDocker(DATA)
    task_id, container = next((c["Labels"]["com.docker.swarm.task.id"], c["Id"]) for c in DATA["node_containers"])
    facts = _ready_facts(api)
    from ingressmesh.swarm.local import signal_number
    assert [signal_number(s) for s in ("15", "SIGTERM", "term", "KILL", "nonsense", None)] == [15, 15, 15, 9, 0, 0]
    for sig in ("1", "10", "SIGHUP", "USR2"):  # reload-your-config signals
        facts._on_event(_kill(task_id, sig, container))
        assert facts.report()["containers"][task_id]["stopping"] is False, sig
    facts._on_event(_kill(task_id, "15", container))
    assert facts.report()["containers"][task_id]["stopping"] is True


def test_the_containers_own_stop_signal_counts_as_a_stop():
    api = FakeDocker(DATA)
    task_id, container = next((c["Labels"]["com.docker.swarm.task.id"], c["Id"]) for c in DATA["node_containers"])
    api.data["node_inspect"] = dict(DATA["node_inspect"])
    api.data["node_inspect"][container] = {**DATA["node_inspect"][container],
                                           "Config": {**(DATA["node_inspect"][container].get("Config") or {}),
                                                      "StopSignal": "SIGQUIT"}}
    facts = _ready_facts(api)
    facts._on_event(_kill(task_id, "1", container))
    assert facts.report()["containers"][task_id]["stopping"] is False
    facts._on_event(_kill(task_id, "3", container))  # SIGQUIT: this container's stop signal
    assert facts.report()["containers"][task_id]["stopping"] is True


def test_a_container_gone_between_list_and_inspect_does_not_abort_the_read():
    from docker.errors import NotFound
    api = FakeDocker(DATA)
    gone = DATA["node_containers"][0]["Id"]
    original = api.inspect_container

    def inspect(container_id):
        if container_id == gone:
            raise NotFound("no such container")
        return original(container_id)
    api.inspect_container = inspect
    facts = _ready_facts(api)
    assert facts.last_error == "" and len(facts.report()["containers"]) == len(DATA["node_containers"]) - 1


def test_a_gateway_that_is_not_an_address_never_reaches_a_rule():
    api = FakeDocker(DATA)
    bridge = {"Containers": {"ingress-sbox": {"IPv4Address": "172.18.0.2; drop/16"}}}
    api.inspect_network = lambda network_id: bridge if network_id == "docker_gwbridge" else FakeDocker.inspect_network(api, network_id)
    assert LocalFacts._read_gateway(api) == ""
    bridge["Containers"]["ingress-sbox"]["IPv4Address"] = "172.18.0.2/16"
    assert LocalFacts._read_gateway(api) == "172.18.0.2"


class CountingDocker(FakeDocker):
    def __init__(self, data):
        super().__init__(data)
        self.inspected = []

    def inspect_container(self, container_id):
        self.inspected.append(container_id)
        return super().inspect_container(container_id)


def test_a_start_reads_one_container_and_a_network_event_reads_no_container():
    """Every task start brings a `start` and a network `connect` event: a read of every
    container for each made a burst of N starts cost N^2 inspects (200 tasks per node kept an
    agent busy for half a minute)."""
    api = CountingDocker(DATA)
    reports = []
    facts = LocalFacts(lambda: api, "unix:///fake/node.sock", "node-x", reports.append, refresh=30)
    facts._resync()
    assert len(api.inspected) == len(DATA["node_containers"])
    task_id, container = next((c["Labels"]["com.docker.swarm.task.id"], c["Id"]) for c in DATA["node_containers"])
    api.inspected.clear()
    with facts.lock:
        facts.containers.pop(task_id)  # as if its start were news
    facts._on_event({"Type": "container", "Action": "start",
                     "Actor": {"ID": container, "Attributes": {"com.docker.swarm.task.id": task_id}}})
    assert api.inspected == [container] and task_id in reports[-1]["containers"]
    api.inspected.clear()
    before = len(reports)
    facts._on_event({"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {}}})
    assert api.inspected == [] and len(reports) == before  # same lb addresses: nothing to report
    api.data["node_networks"] = [n for n in DATA["node_networks"] if "10.200.0.4" not in json.dumps(n)]
    facts._on_event({"Type": "network", "Action": "disconnect", "Actor": {"ID": "n1", "Attributes": {}}})
    assert api.inspected == [] and sorted(reports[-1]["lb_addresses"].values()) == ["10.200.1.6"]


def test_polling_stretches_with_what_a_task_list_costs():
    pacing = PollPacing()
    assert pacing.interval(True, 0.01) == 1.0 and pacing.interval(False, 0.01) == 5.0
    # 100,000 tasks take seconds to list: polls keep under 20 % (busy) and 1 % (idle) of a core.
    assert pacing.interval(True, 2.0) == 10.0 and pacing.interval(False, 2.0) == 200.0
    assert pacing.spacing(0.01) == 0.1 and pacing.spacing(2.0) == 2.0


class CountingTasks(FakeDocker):
    """Counts task-list reads, each taking `delay` s (a swarm whose list is costly to read)."""

    def __init__(self, data, delay: float = 0.0):
        super().__init__(data)
        self.task_reads, self.delay = 0, delay

    def tasks(self):
        self.task_reads += 1
        time.sleep(self.delay)
        return super().tasks()


def test_a_slow_task_list_is_polled_less_often():
    api = CountingTasks(DATA, delay=0.05)
    pacing = PollPacing(busy_interval=0.01, idle_interval=0.01, busy_window=60, min_spacing=0.01, busy_share=0.1)
    provider = SwarmProvider(lambda: api, "fake", lambda state: None, pacing)
    provider.start()
    try:
        assert _until(lambda: provider.state is not None)
        time.sleep(1.0)
        reads = api.task_reads
        assert provider.read_seconds >= 0.05
        # Unpaced, 0.06 s per loop would make ~16 reads a second; paced at 10 % of a core: ~2.
        assert 1 <= reads <= 4, reads
    finally:
        provider.stop()
        api.close()


def test_a_busy_poke_polls_at_the_busy_interval_until_the_manager_follows():
    """A node saw a task turn healthy: Swarm lists it running a moment later.  Idle, a slow task
    list would next be read minutes later; after a busy poke it is read every busy interval."""
    api = CountingTasks(DATA)
    pacing = PollPacing(busy_interval=0.05, idle_interval=30.0, busy_window=1.0, min_spacing=0.01)
    provider = SwarmProvider(lambda: api, "fake", lambda state: None, pacing)
    provider.start()
    try:
        assert _until(lambda: provider.state is not None)
        time.sleep(1.2)  # the first read's change is out of the busy window: idle, 30 s apart
        idle_reads = api.task_reads
        time.sleep(0.5)
        assert api.task_reads == idle_reads
        provider.poke()  # a plain poke: one read, then idle again
        assert _until(lambda: api.task_reads == idle_reads + 1)
        time.sleep(0.5)
        assert api.task_reads == idle_reads + 1
        provider.poke(busy=True)
        time.sleep(0.6)
        assert api.task_reads >= idle_reads + 5, api.task_reads - idle_reads  # ~every 0.05 s
        time.sleep(1.0)  # the busy window ends: idle again
        settled = api.task_reads
        time.sleep(0.5)
        assert api.task_reads == settled
    finally:
        provider.stop()
        api.close()
