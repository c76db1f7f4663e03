"""The lab's wait for a Ready swarm: a manager that is slow to answer is waited for, not fatal."""
import subprocess
import types

import pytest

from ingressmesh.lab import swarm

ROWS = "node1\tReady\tActive\tLeader\nnode2\tReady\tActive\t\nnode3\tReady\tActive\t\n"


class SlowThenReadyLab:
    """A lab whose manager times out on its first `docker node ls` calls, then lists 3 Ready nodes."""

    def __init__(self, timeouts: int, stdout: str = ROWS):
        self.config = types.SimpleNamespace(nodes=3)
        self.timeouts, self.stdout, self.calls = timeouts, stdout, 0

    def docker(self, n, *args, check=True, timeout=60, input=None):
        self.calls += 1
        if self.calls <= self.timeouts:
            raise subprocess.TimeoutExpired(["docker", *args], timeout)
        return subprocess.CompletedProcess(["docker", *args], 0, self.stdout, "")


def test_a_manager_timing_out_is_not_ready_yet_and_the_wait_goes_on():
    lab = SlowThenReadyLab(timeouts=2)
    swarm.wait_ready(lab, timeout=5)
    assert lab.calls == 3


def test_node_rows_are_empty_while_the_manager_does_not_answer():
    assert swarm.node_rows(SlowThenReadyLab(timeouts=1)) == []


def test_a_swarm_that_never_gets_ready_is_named_with_what_the_manager_listed():
    lab = SlowThenReadyLab(timeouts=0, stdout="node1\tReady\tActive\tLeader\nnode2\tDown\tActive\t\n")
    with pytest.raises(swarm.SwarmError, match="node2.*Down"):
        swarm.wait_ready(lab, timeout=0.5)


def test_a_manager_that_never_answers_is_named_as_such():
    lab = SlowThenReadyLab(timeouts=10**6)
    with pytest.raises(swarm.SwarmError, match="did not answer"):
        swarm.wait_ready(lab, timeout=0.3)
