"""What an agent leaves when stopped: the per-node lease (older/newer agents, dead ones), the
--on-stop policies, and the read-only /proc/sys of a container.  Rootless: real files and flock,
real child processes; the kernel side (tables removed or handed over) is in the swarm lab tests."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from ingressmesh.agent import leaving
from ingressmesh.agent.docker_layout import DockerNamespaces
from ingressmesh.agent.node_lease import LeaseError, NodeLease
from ingressmesh.agent.writable_sysctls import ensure_writable_sysctls, proc_sys_read_only

HOLD = """
import sys, time
from ingressmesh.agent.node_lease import NodeLease
lease = NodeLease(sys.argv[1]).take()
print(lease.name, flush=True)
time.sleep(60)
"""


def _holder(directory) -> tuple[subprocess.Popen, str]:
    """Another agent (a real process) holding a lease in `directory`; (process, its lock name)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


def test_agents_of_one_node_see_who_started_before_and_after(tmp_path):
    first = NodeLease(str(tmp_path)).take()
    second = NodeLease(str(tmp_path)).take()
    assert first.name < second.name
    assert second.older_alive() == [first.name] and second.newer_alive() == []
    assert first.newer_alive() == [second.name] and first.older_alive() == []
    second.release()
    assert first.newer_alive() == [] and sorted(os.listdir(tmp_path)) == [first.name]
    first.release()
    assert os.listdir(tmp_path) == []


def test_a_killed_agent_is_seen_as_gone_and_its_file_removed(tmp_path):
    proc, name = _holder(tmp_path)
    mine = NodeLease(str(tmp_path)).take()
    try:
        assert mine.older_alive() == [name]  # alive in another process: its lock is held
        proc.kill()
        proc.wait(10)
        assert mine.older_alive() == []  # SIGKILL released the lock: a dead agent's file
        assert sorted(os.listdir(tmp_path)) == [mine.name]
    finally:
        proc.kill()
        proc.stdout.close()
        mine.release()


def test_a_new_agent_waits_for_the_old_one_to_stop_and_gives_up_on_stop(tmp_path):
    proc, _ = _holder(tmp_path)
    new = NodeLease(str(tmp_path)).take()
    try:
        done: list[bool] = []
        waiter = threading.Thread(target=lambda: done.append(new.wait_for_older(threading.Event(), poll=0.05)))
        waiter.start()
        time.sleep(0.3)
        assert done == []  # still waiting: the old agent runs
        proc.terminate()
        proc.wait(10)
        waiter.join(5)
        assert done == [True]
        stop = threading.Event()
        blocker, _ = _holder(tmp_path)
        newest = NodeLease(str(tmp_path)).take()
        try:
            stop.set()
            assert newest.wait_for_older(stop) is False  # SIGTERM while waiting: never took over
        finally:
            blocker.kill()
            blocker.wait(10)
            blocker.stdout.close()
            newest.release()
    finally:
        proc.kill()
        proc.stdout.close()
        new.release()


def test_a_lease_directory_that_cannot_be_used_is_named(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(LeaseError, match=str(not_a_dir)):
        NodeLease(str(not_a_dir / "agents")).take()


def test_files_that_are_not_leases_are_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("operator's")
    (tmp_path / "agent-broken").write_text("no suffix")
    lease = NodeLease(str(tmp_path)).take()
    assert lease.older_alive() == [] and lease.newer_alive() == []
    lease.release()
    assert sorted(os.listdir(tmp_path)) == ["agent-broken", "notes.txt"]


@pytest.fixture
def removals(monkeypatch):
    calls = []
    monkeypatch.setattr(leaving, "remove_node_rules", lambda namespaces, backend: calls.append(backend) or {})
    return calls


def test_stop_policies(tmp_path, removals):
    namespaces = DockerNamespaces(str(tmp_path))
    assert leaving.leave_node("keep", None, namespaces, "nftables") == "kept" and removals == []
    old = NodeLease(str(tmp_path / "lease")).take()
    assert leaving.leave_node("handover", old, namespaces, "nftables") == "removed"  # nobody to hand over to
    new = NodeLease(str(tmp_path / "lease")).take()
    assert leaving.leave_node("handover", old, namespaces, "nftables") == "handed over"
    assert leaving.leave_node("cleanup", old, namespaces, "nftables") == "removed"  # cleanup always removes
    assert removals == ["nftables", "nftables"]
    new.release()
    old.release()


def test_a_failed_removal_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(leaving, "remove_node_rules", lambda namespaces, backend: {"(host)": "nft said no"})
    assert leaving.leave_node("cleanup", None, DockerNamespaces(str(tmp_path)), "nftables") == "failed"


def test_node_namespaces_are_the_host_and_every_file_in_dockers_netns_dir(tmp_path):
    (tmp_path / "netns").mkdir()
    for name in ("ingress_sbox", "lb_abc", "1f2e3d4c5b6a"):
        (tmp_path / "netns" / name).write_text("")
    paths = [ns.path for ns in leaving.node_namespaces(DockerNamespaces(str(tmp_path)))]
    assert paths == ["", *(str(tmp_path / "netns" / n) for n in ("1f2e3d4c5b6a", "ingress_sbox", "lb_abc"))]
    assert [ns.path for ns in leaving.node_namespaces(DockerNamespaces(str(tmp_path / "missing")))] == [""]


CONTAINER_MOUNTINFO = """\
394 393 0:91 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
311 394 0:91 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
312 394 0:91 /sysrq-trigger /proc/sysrq-trigger ro,nosuid,nodev,noexec,relatime - proc proc rw
"""
HOST_MOUNTINFO = "22 28 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"


def test_a_containers_read_only_proc_sys_is_recognised():
    assert proc_sys_read_only(CONTAINER_MOUNTINFO) is True
    assert proc_sys_read_only(HOST_MOUNTINFO) is False
    assert proc_sys_read_only(CONTAINER_MOUNTINFO.replace("/proc/sys ro,", "/proc/sys rw,")) is False


def test_nothing_is_remounted_on_a_host_and_an_unreadable_mountinfo_is_named(tmp_path):
    host = tmp_path / "mountinfo"
    host.write_text(HOST_MOUNTINFO)
    assert ensure_writable_sysctls(str(host)) is None
    assert "cannot read" in ensure_writable_sysctls(str(tmp_path / "missing"))


def test_only_proc_sys_net_is_bound_then_made_writable(tmp_path):
    """The commands (tests/kernel/test_writable_sysctls.py runs them on the real kernel)."""
    info = tmp_path / "mountinfo"
    info.write_text(CONTAINER_MOUNTINFO)
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    assert ensure_writable_sysctls(str(info), run) is None
    assert calls == [["mount", "--bind", "/proc/sys/net", "/proc/sys/net"],
                     ["mount", "-o", "remount,bind,rw", "/proc/sys/net"]]
    bound = CONTAINER_MOUNTINFO + "400 311 0:91 /sys/net /proc/sys/net ro,nosuid,nodev,noexec,relatime - proc proc rw\n"
    info.write_text(bound)
    calls.clear()
    assert ensure_writable_sysctls(str(info), run) is None  # already its own mount point: remount only
    assert calls == [["mount", "-o", "remount,bind,rw", "/proc/sys/net"]]
    info.write_text(bound.replace("/proc/sys/net ro,", "/proc/sys/net rw,"))
    calls.clear()
    assert ensure_writable_sysctls(str(info), run) is None and calls == []


def test_a_refused_mount_is_named_with_its_command(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(CONTAINER_MOUNTINFO)

    def run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 32 if "remount,bind,rw" in argv else 0, "", "permission denied")
    problem = ensure_writable_sysctls(str(info), run)
    assert "`mount -o remount,bind,rw /proc/sys/net` failed (permission denied)" in problem


def test_an_agent_stopped_while_waiting_leaves_the_older_agents_rules_alone(tmp_path, removals):
    """An update rolled back (the new agent stopped, the old one keeps running): nothing removed."""
    proc, _ = _holder(tmp_path / "lease")
    new = NodeLease(str(tmp_path / "lease")).take()
    try:
        outcome = leaving.leave_before_taking_over("handover", new, DockerNamespaces(str(tmp_path)), "nftables",
                                                   timeout=0.5)
        assert outcome == "left to the older agent" and removals == []
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        new.release()


def test_an_agent_stopped_while_waiting_cleans_once_the_older_one_handed_over(tmp_path, removals):
    """`docker stack rm` during a rolling update: the old agent sees the new one waiting and hands
    its rules over as it exits; the new one, stopped too, must then remove them."""
    proc, _ = _holder(tmp_path / "lease")
    new = NodeLease(str(tmp_path / "lease")).take()
    try:
        threading.Timer(0.3, proc.terminate).start()  # the old agent goes a moment later
        outcome = leaving.leave_before_taking_over("handover", new, DockerNamespaces(str(tmp_path)), "nftables",
                                                   timeout=10)
        assert outcome == "removed" and removals == ["nftables"]
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        new.release()


def test_odd_entries_in_the_lease_directory_neither_crash_nor_block(tmp_path):
    (tmp_path / "agent-00000000000000000001-aaaa.lock").mkdir()  # a directory named like a lease
    os.mkfifo(tmp_path / "agent-00000000000000000002-bbbb.lock")  # a FIFO: opening it would block
    os.symlink("/etc/passwd", tmp_path / "agent-00000000000000000003-cccc.lock")
    lease = NodeLease(str(tmp_path)).take()
    started = time.monotonic()
    assert lease.older_alive() == [] and lease.newer_alive() == []
    assert time.monotonic() - started < 2
    lease.release()
    assert os.path.exists("/etc/passwd")


def test_a_failed_take_leaves_no_file_behind(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "rename", refuse)
    for _ in range(3):
        with pytest.raises(LeaseError, match="No space left"):
            NodeLease(str(tmp_path)).take()
    assert os.listdir(tmp_path) == []


SIGNALLED_CHILD = """
import sys, time
from ingressmesh.cli.daemons import _stop_on_signals
stop = _stop_on_signals()
print("ready", flush=True)
end = time.monotonic() + 8
i = 0
while time.monotonic() < end:  # what a daemon's main thread does: wait on `stop`, set it
    stop.wait(0)
    stop.set()
    stop.clear()
    i += 1
    if i % 2000 == 0:
        print(i, flush=True)
print("done", flush=True)
"""


def test_a_burst_of_sigterms_never_deadlocks_a_daemon(tmp_path):
    """A handler that set the Event itself could run while the main thread held the Event's lock
    (inside wait/set) and wait for it forever: the agent hung until SIGKILL, without cleaning up."""
    import signal
    child = subprocess.Popen([sys.executable, "-c", SIGNALLED_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        while time.monotonic() - started < 4 and child.poll() is None:  # bounded: ~1,000 signals
            child.send_signal(signal.SIGTERM)
            time.sleep(0.004)
        out, _ = child.communicate(timeout=20)
        assert out.strip().endswith("done"), out[-200:]
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()


def test_stopping_the_fast_path_waits_for_its_sync_under_way(tmp_path):
    """The stop policy may remove every table right after: a container table written later would stay."""
    from ingressmesh.agent.fast_path import FastPath
    events = []

    class SlowFastPath(FastPath):
        def sync(self):
            events.append("sync begins")
            time.sleep(0.5)
            events.append("sync ends")

    fast = SlowFastPath(DockerNamespaces(str(tmp_path)), containers=None, make_backend=None).start()
    fast.containers_changed()
    time.sleep(0.1)
    fast.stop()
    events.append("stopped")
    assert events == ["sync begins", "sync ends", "stopped"]
