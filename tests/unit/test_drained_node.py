"""A drained node keeps its mesh in the stack install (agent/drained.py, resident_container.py):
the resident container's spec made from the task's own container, the drain decision against
real controllers on 127.0.0.1, the hand-over through real leases held by real processes.  The
whole path (Swarm draining node3 under load) is tests/swarm/test_stack_install.py."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from click.testing import CliRunner

from ingressmesh.agent import drained
from ingressmesh.agent.controller_client import ControllerClient
from ingressmesh.agent.node_lease import NodeLease
from ingressmesh.agent.resident_container import (CA_PATH, RESIDENT_LABEL, TOKEN_PATH, files_archive, flag_value,
                                                  resident_spec, retire_residents, rewrite_argv)
from ingressmesh.cli import main as cli
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.metrics import ControllerMetrics

TOKEN = "drained-node-test-token-0123456789"
STACK_ARGV = ["ingressmesh", "agent", "--docker", "unix:///var/run/docker.sock",
              "--token-file", "/run/secrets/ingressmesh_token", "--exec-root", "/run/docker", "--backend", "auto",
              "--on-stop", "handover", "--lease-dir", "/run/ingressmesh/agents",
              "--ready-file", "/tmp/ingressmesh-agent.lease", "--listen", "0.0.0.0:9402"]
# What `docker inspect` shows of a stack agent task's container (the fields the resident uses, and
# Swarm's own that it must not take).
TASK_CONTAINER = {
    "Id": "c0ffee" * 10 + "abcd",
    "Image": "sha256:" + "5" * 64,
    "Config": {
        "Hostname": "node3", "Entrypoint": None, "Cmd": STACK_ARGV,
        "Image": "imlab/proxy:latest",
        "Env": ["INGRESSMESH_NODE_ID=n3", "INGRESSMESH_DRAINED_RESIDENT=ingressmesh_agent_drained",
                "INGRESSMESH_TASK_ID=t3", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "INGRESSMESH_CA=/run/secrets/ingressmesh_ca"],  # a Swarm secret: not there for a plain container
        "Labels": {"com.docker.stack.namespace": "ingressmesh", "com.docker.swarm.task.id": "t3",
                   "com.docker.swarm.service.name": "ingressmesh_agent"},
        "Healthcheck": {"Test": ["CMD", "test", "-s", "/tmp/ingressmesh-agent.lease"]},
    },
    "HostConfig": {
        "NetworkMode": "host", "CapAdd": ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], "CapDrop": None,
        "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"},
                   {"Type": "bind", "Source": "/run/docker/netns", "Target": "/run/docker/netns",
                    "BindOptions": {"Propagation": "rslave"}},
                   {"Type": "volume", "Source": "ingressmesh_lease", "Target": "/run/ingressmesh/agents",
                    "VolumeOptions": {"Labels": {"com.docker.stack.namespace": "ingressmesh"}}}],
        "Isolation": "default", "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
        "Init": False,
    },
}


def test_argv_flags_are_replaced_in_both_forms_dropped_or_added():
    argv = ["agent", "--on-stop=handover", "--token-file", "/a", "--drained-resident", "x", "--listen", "1:2"]
    assert rewrite_argv(argv, {"--on-stop": "keep", "--token-file": "/b", "--ca": "/c"}, ("--drained-resident",)) == \
        ["agent", "--on-stop", "keep", "--token-file", "/b", "--listen", "1:2", "--ca", "/c"]
    assert flag_value(["--ca", "/x", "--ca=/y"], "--ca") == "/y" and flag_value(["--cab", "/x"], "--ca") is None


def test_the_resident_is_the_task_container_without_what_makes_it_a_task():
    spec = resident_spec(TASK_CONTAINER, "ingressmesh_agent_drained", ca=False)
    assert spec["Image"] == TASK_CONTAINER["Image"]  # by id: the task's code, whatever the tag says now
    assert spec["Entrypoint"] == rewrite_argv(STACK_ARGV, {"--on-stop": "keep", "--token-file": TOKEN_PATH})
    assert spec["Cmd"] == [] and spec["Entrypoint"][:2] == ["ingressmesh", "agent"]
    assert "handover" not in spec["Entrypoint"] and "/run/secrets/ingressmesh_token" not in spec["Entrypoint"]
    assert spec["Env"] == ["INGRESSMESH_NODE_ID=n3", TASK_CONTAINER["Config"]["Env"][3]]
    assert spec["Labels"] == {RESIDENT_LABEL: "ingressmesh_agent_drained", "com.docker.stack.namespace": "ingressmesh"}
    host = spec["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert host["Mounts"] == TASK_CONTAINER["HostConfig"]["Mounts"] and host["NetworkMode"] == "host"
    assert host["CapAdd"] == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] and "CapDrop" not in host and "Isolation" not in host
    assert "Healthcheck" not in spec  # the task's check tests a file the resident has no reason to write
    with_ca = resident_spec({**TASK_CONTAINER, "Config": {**TASK_CONTAINER["Config"],
                                                         "Cmd": STACK_ARGV + ["--ca", "/run/secrets/ca"]}}, "r", ca=True)
    assert flag_value(with_ca["Entrypoint"], "--ca") == CA_PATH
    in_entrypoint = {**TASK_CONTAINER, "Config": {**TASK_CONTAINER["Config"], "Entrypoint": STACK_ARGV[:2],
                                                  "Cmd": STACK_ARGV[2:]}}
    assert resident_spec(in_entrypoint, "r", ca=False)["Entrypoint"] == spec["Entrypoint"]


def test_the_files_copied_into_the_resident_are_root_only():
    data = files_archive({TOKEN_PATH: b"node:n3:abc\n", CA_PATH: b"PEM"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"etc/ingressmesh", "etc/ingressmesh/token", "etc/ingressmesh/ca.pem"}
        assert members["etc/ingressmesh"].isdir() and members["etc/ingressmesh"].mode == 0o700
        assert members["etc/ingressmesh/token"].mode == 0o400 and members["etc/ingressmesh/token"].uid == 0
        assert tar.extractfile("etc/ingressmesh/token").read() == b"node:n3:abc\n"


def _cluster(availability: str) -> dict:
    return {"nodes": [{"id": "n1", "hostname": "node1", "availability": "active"},
                      {"id": "n3", "hostname": "node3", "availability": availability}]}


@pytest.fixture
def controller():
    store = SnapshotStore()
    store.publish(_cluster("active"))
    server = ControllerServer(store, lambda report: None, TOKEN, ControllerMetrics(), ("127.0.0.1", 0)).start()
    client = ControllerClient([server.url], TOKEN, timeout=5)
    yield store, client
    client.close()
    store.close()
    server.stop()


def test_availability_is_read_from_either_plain_form():
    assert drained.availability(_cluster("drain"), "n3") == "drain"
    assert drained.availability({"nodes": {"n3": {"id": "n3"}}}, "n3") == "active"
    assert drained.availability(_cluster("drain"), "n9") is None and drained.availability(None, "n3") is None


def test_a_drain_the_controller_publishes_after_the_stop_is_waited_for(controller):
    store, client = controller
    threading.Timer(0.5, lambda: store.publish(_cluster("drain"))).start()
    started = time.monotonic()
    assert drained.node_drained(client, "n3", known="active", timeout=5) is True
    assert 0.4 < time.monotonic() - started < 3


def test_a_node_that_stays_active_is_not_drained_after_the_wait(controller):
    store, client = controller
    threading.Timer(0.3, lambda: store.publish({**_cluster("active"), "other": 1})).start()  # a change, not a drain
    started = time.monotonic()
    assert drained.node_drained(client, "n3", known="active", timeout=1.0) is False
    assert 0.9 < time.monotonic() - started < 3
    store.publish(_cluster("drain"))
    assert drained.node_drained(client, "n3", known="active", timeout=5) is True  # already drained: at once


def test_with_no_controller_the_last_snapshot_decides(controller):
    store, client = controller
    store.close()
    dead = ControllerClient(["http://127.0.0.1:1"], TOKEN, timeout=1)
    try:
        assert drained.node_drained(dead, "n3", known="drain", timeout=5) is True
        assert drained.node_drained(dead, "n3", known="active", timeout=5) is False
        assert drained.node_drained(dead, "n3", known=None, timeout=5) is False
    finally:
        dead.close()


HOLD = """
import sys, time
from ingressmesh.agent.node_lease import NodeLease
lease = NodeLease(sys.argv[1]).take()
print(lease.name, flush=True)
time.sleep(60)
"""


def test_the_rules_go_to_the_resident_once_it_holds_a_newer_lease(tmp_path):
    mine = NodeLease(str(tmp_path)).take()
    started: list[subprocess.Popen] = []

    def start() -> str:  # a real process taking its lease a little later, as a container would
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)\n" + HOLD,
                                         str(tmp_path)], stdout=subprocess.PIPE, text=True))
        return "resident"
    try:
        assert drained.hand_to_resident(mine, start, timeout=20, poll=0.05) == "handed to the resident agent"
        assert len(mine.newer_alive()) == 1
    finally:
        for proc in started:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()
        mine.release()


def test_the_rules_stay_when_no_resident_comes(tmp_path):
    mine = NodeLease(str(tmp_path)).take()
    try:
        def fails() -> str:
            raise RuntimeError("docker said no")
        assert drained.hand_to_resident(mine, fails) == "kept (no resident agent)"
        assert drained.hand_to_resident(mine, lambda: "resident", timeout=0.3, poll=0.05) == \
            "kept (the resident agent did not start)"
    finally:
        mine.release()


def test_a_rolling_update_is_no_drain_and_asks_nobody(tmp_path):
    mine = NodeLease(str(tmp_path)).take()
    newer = NodeLease(str(tmp_path)).take()
    try:
        resident = drained.DrainedResident("r", "t3", "unix:///nonexistent.sock", "node:n3:x")
        never = ControllerClient(["http://127.0.0.1:1"], TOKEN, timeout=1)
        assert resident.leave(mine, never, "n3", known="drain") is None  # the newer task takes the rules
        never.close()
    finally:
        newer.release()
        mine.release()


class RecordingApi:
    """Records the Engine API calls retire_residents makes (an addition to the lab test)."""

    def __init__(self, found):
        self.found, self.calls = found, []

    def containers(self, all=False, filters=None):
        self.calls.append(("containers", all, filters))
        return self.found

    def update_container(self, cid, restart_policy=None):
        self.calls.append(("update", cid, restart_policy))

    def stop(self, cid, timeout=None):
        self.calls.append(("stop", cid))

    def remove_container(self, cid):
        self.calls.append(("remove", cid))


def test_a_resident_loses_its_restart_policy_before_it_is_stopped_then_goes():
    api = RecordingApi([{"Id": "abc"}])
    assert retire_residents(api, "ingressmesh_agent_drained") == ["abc"]
    assert api.calls == [("containers", True, {"label": f"{RESIDENT_LABEL}=ingressmesh_agent_drained"}),
                         ("update", "abc", {"Name": "no"}), ("stop", "abc"), ("remove", "abc")]


def test_drained_resident_is_refused_outside_the_stack_agent(tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    result = CliRunner().invoke(cli, ["agent", "--token-file", str(token), "--drained-resident", "x",
                                      "--on-stop", "keep"])
    assert result.exit_code != 0 and "--drained-resident is for the stack's agent task" in result.output
    result = CliRunner().invoke(cli, ["agent", "--token-file", str(token), "--drained-resident", "x",
                                      "--on-stop", "handover", "--lease-dir", str(tmp_path / "l")])
    assert result.exit_code != 0 and "--task-id" in result.output
