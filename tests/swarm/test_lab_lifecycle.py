"""The swarm lab itself: nodes, images, services, exec/status, and clean teardown after crashes.
Traffic goes only to addresses inside the lab's namespaces."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ingressmesh.lab import BUSYBOX_IMAGE, PYTHON_IMAGE, Lab, LabConfig
from ingressmesh.lab import procs

LAB_CLI = [sys.executable, "-m", "ingressmesh.lab"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(lab: Lab, n: int, url: str) -> str:
    """GET from node n's netns with the host's busybox wget (bounded)."""
    proc = lab.run_in_node(n, ["busybox", "timeout", "5", "busybox", "wget", "-qO-", url],
                           capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_three_ready_nodes_one_manager(lab):
    client = lab.docker_client(1)
    try:
        nodes = client.nodes.list()
    finally:
        client.close()
    assert sorted(n.attrs["Description"]["Hostname"] for n in nodes) == lab.node_names
    assert all(n.attrs["Status"]["State"] == "ready" for n in nodes)
    assert [n.attrs["Spec"]["Role"] for n in nodes].count("manager") == 1
    addrs = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["Addr"] for n in nodes}
    assert addrs == {f"node{i}": lab.node_address(i) for i in (1, 2, 3)}


def test_images_on_every_node(lab):
    for n in (1, 2, 3):
        proc = lab.docker(n, "image", "inspect", "--format", "{{json .Config.Cmd}}",
                          BUSYBOX_IMAGE, PYTHON_IMAGE)
        assert proc.stdout.split() == ['["/usr/local/bin/hostname-httpd"]',
                                       '["/usr/local/bin/hostname-server"]']


def test_published_service_gets_three_running_tasks_that_answer(lab):
    lab.docker(1, "service", "create", "--detach", "--no-resolve-image", "--name", "lc-web",
               "--replicas", "3", "-p", "8080:80", BUSYBOX_IMAGE)
    try:
        def running():
            out = lab.docker(1, "service", "ps", "lc-web", "--filter", "desired-state=running",
                             "--format", "{{.Node}} {{.CurrentState}}").stdout.split("\n")
            rows = [line.split() for line in out if line.strip()]
            return rows if sum(r[1] == "Running" for r in rows) == 3 else None
        rows = wait_for(running, 60, "3 running tasks")
        assert sorted(r[0] for r in rows) == lab.node_names  # spread: one task per node
        for n in (1, 2, 3):  # each task answers on its docker_gwbridge address, with its name
            cid = lab.docker(n, "ps", "-q", "--filter", "label=com.docker.swarm.service.name=lc-web"
                             ).stdout.split()[0]
            info = json.loads(lab.docker(n, "inspect", cid).stdout)[0]
            gateway = json.loads(lab.docker(n, "network", "inspect", "docker_gwbridge", "-f",
                                            "{{json .Containers}}").stdout)[info["Id"]]
            gw_ip = gateway["IPv4Address"].split("/")[0]
            assert http_get(lab, n, f"http://{gw_ip}/") == info["Config"]["Hostname"]
        assert "ingress_sbox" in os.listdir(lab.netns_dir(1))
    finally:
        lab.docker(1, "service", "rm", "lc-web", check=False)


def test_python_image_answers_with_hostname_and_lingers_on_sigterm(lab):
    lab.docker(2, "run", "-d", "--name", "lc-py", "--hostname", "lc-py-host", "-e", "LINGER=5",
               PYTHON_IMAGE)
    try:
        ip = lab.docker(2, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "lc-py").stdout.strip()
        wait_for(lambda: lab.run_in_node(
            2, ["busybox", "timeout", "2", "busybox", "wget", "-qO/dev/null", f"http://{ip}/"],
            capture_output=True, timeout=10).returncode == 0, 20, "python server listening")
        assert http_get(lab, 2, f"http://{ip}/") == "lc-py-host"
        assert http_get(lab, 2, f"http://{ip}/health") == "ok"
        assert lab.docker(2, "exec", "lc-py", "hostname-server", "--check").returncode == 0
        started = time.monotonic()
        lab.docker(2, "kill", "--signal", "TERM", "lc-py")
        time.sleep(0.5)
        assert http_get(lab, 2, f"http://{ip}/") == "lc-py-host"  # still serving while draining
        health = lab.run_in_node(2, ["busybox", "wget", "-qO-", f"http://{ip}/health"],
                                 capture_output=True, text=True, timeout=10)
        assert health.returncode != 0 and "503" in health.stderr
        lab.docker(2, "wait", "lc-py", timeout=15)
        took = time.monotonic() - started
        assert 4.8 < took < 12, took  # LINGER=5: room for a slow `docker kill` and the two checks above
        assert lab.docker(2, "inspect", "-f", "{{.State.ExitCode}}", "lc-py").stdout.strip() == "0"
    finally:
        lab.docker(2, "rm", "-f", "lc-py", check=False)


def test_status_api_and_cli(lab):
    status = lab.status()
    assert status["up"] and status["client_netns"] and status["bridge_netns"]
    assert [node["dockerd_pid"] for node in status["nodes"]] == [lab.dockerd_pid(n)
                                                                 for n in (1, 2, 3)]
    proc = subprocess.run([*LAB_CLI, "status", "--lab-dir", lab.config.lab_dir],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up (phase up)" in proc.stdout and "Leader" in proc.stdout
    missing = subprocess.run([*LAB_CLI, "status", "--lab-dir", "/nonexistent/imlab"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "NOT up" in missing.stdout


def test_exec_in_node_and_client_and_docker_cli(lab):
    run = [*LAB_CLI, "exec", "--lab-dir", lab.config.lab_dir]
    node = subprocess.run([*run, "2", "--", "ip", "-br", "addr", "show", "eth0"],
                          capture_output=True, text=True, timeout=30)
    assert f"{lab.node_address(2)}/24" in node.stdout, node.stderr
    client = subprocess.run([*run, "client", "--", "ip", "-br", "addr", "show", "eth0"],
                            capture_output=True, text=True, timeout=30)
    assert f"{lab.client_address}/24" in client.stdout, client.stderr
    assert lab.run_in_client(["busybox", "ping", "-c1", "-W2", lab.node_address(3)],
                             capture_output=True, timeout=10).returncode == 0
    host = subprocess.run([*run, "1", "--", "sh", "-c", 'echo "$DOCKER_HOST"'],
                          capture_output=True, text=True, timeout=30)
    assert host.stdout.strip() == lab.docker_socket(1)
    ls = subprocess.run([*LAB_CLI, "docker", "--lab-dir", lab.config.lab_dir, "1", "--",
                         "node", "ls", "--format", "{{.Hostname}}"],
                        capture_output=True, text=True, timeout=30)
    assert sorted(ls.stdout.split()) == lab.node_names, ls.stderr


# -- crash cleanup: a second, small lab of its own, so the session lab is untouched -------

CRASH = LabConfig(lab_dir="/var/lib/ingressmesh/lab-crash", prefix="imcrash", subnet="10.79.0",
                  pool="10.202.0.0/16", nodes=2, managers=1, images=("busybox",))


def assert_nothing_left(config: LabConfig, created_run_dirs: list[str]) -> None:
    assert Lab(config).leftovers() == []
    assert not [n for n in os.listdir("/run/netns") if n.startswith(config.prefix + "-")]
    assert not os.path.exists(config.lab_dir)
    assert not procs.pids_with_mounts_under(config.lab_dir)
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        assert config.lab_dir not in handle.read()
    assert not procs.cgroup_dirs(config.cgroup_pattern())
    for path in created_run_dirs:  # removed unless another lab still mounts on it
        assert not os.path.exists(path) or procs.mounts_on([path])


@pytest.fixture
def crash_lab(lab_root):
    the_lab = Lab(CRASH)
    the_lab.down(grace=0)
    yield the_lab
    the_lab.down(grace=0)


def test_down_after_dockerds_and_containerds_are_killed(crash_lab):
    crash_lab.up()
    crash_lab.docker(2, "run", "-d", "--name", "orphan", BUSYBOX_IMAGE)
    with open(CRASH.state_file, encoding="utf-8") as handle:
        created = json.load(handle)["run_dirs_created"]
    dockerds = {crash_lab.dockerd_pid(n) for n in (1, 2)}
    children = {pid for pid in procs.all_pids() if _ppid(pid) in dockerds}  # containerd
    assert children
    procs.kill(dockerds | children)
    time.sleep(0.3)
    assert procs.pids_in_cgroups(procs.cgroup_dirs(CRASH.cgroup_pattern())), \
        "the container should outlive its dockerd (held by its shim)"
    result = crash_lab.down()
    assert result["kept"] == []
    assert_nothing_left(CRASH, created)


def test_down_after_lab_up_is_killed_midway(crash_lab):
    up = subprocess.Popen([*LAB_CLI, "up", "--lab-dir", CRASH.lab_dir, "--prefix", CRASH.prefix,
                           "--subnet", CRASH.subnet, "--pool", CRASH.pool, "--nodes", "2",
                           "--images", "busybox"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def dockerds_launched():
            try:
                with open(CRASH.state_file, encoding="utf-8") as handle:
                    state = json.load(handle)
            except (OSError, ValueError):
                return None
            return state if len(state.get("dockerds", {})) == 2 else None
        state = wait_for(dockerds_launched, 60, "lab up to launch its dockerds")
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
    assert state["phase"] == "starting"
    assert crash_lab.leftovers()  # something to clean up
    result = crash_lab.down()
    assert result["kept"] == []
    assert_nothing_left(CRASH, state["run_dirs_created"])


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
