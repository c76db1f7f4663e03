"""Hundreds of labelled services created and removed at once while load runs through every node
to an unrelated host (issue 20, point 6c): 0 failed requests, and no proxy task replaced (its
health check must not fail from CPU pressure alone; if every check failed anyway, panic mode
keeps the tasks routed).  Traffic: only from the lab's client namespace to its nodes."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingressmesh.testbed.l7_probe import L7Load
from l7_helpers import (DEFAULT_PROXY, HTTP_PORT, labelled, proxies_deployed, replicas, served_by_every_replica,
                        wait_routed)
from swarm_helpers import wait_for, wait_running

CHURN = 200  # labelled services created, then removed in one `docker service rm`
WITH_TASK = 10  # every 10th runs one task (20 containers start and stop as well)
HOST = "steady.churn"


@pytest.fixture(scope="module")
def l7(mesh):
    yield from proxies_deployed(mesh)


def _name(i: int) -> str:
    return f"churn{i:03d}"


def _create(lab, i: int) -> str:
    labelled(lab, _name(i), "--replicas", "1" if i % WITH_TASK == 0 else "0", hosts=f"{_name(i)}.churn", port="80")
    return _name(i)


def _churn_services(lab) -> list[str]:
    return [n for n in lab.docker(1, "service", "ls", "--format", "{{.Name}}").stdout.split() if n.startswith("churn")]


def test_hundreds_of_labelled_services_come_and_go_with_no_failed_request(l7):
    lab = l7.lab
    labelled(lab, "steady", "--replicas", "2", hosts=HOST, port="80")
    last_with_task = f"{_name(CHURN - WITH_TASK)}.churn"
    try:
        wait_running(lab, "steady", 2)
        wait_routed(lab, HOST)
        proxies = sorted(cid for _, cid, _ in replicas(lab, DEFAULT_PROXY))
        targets = [(lab.node_address(n), HTTP_PORT) for n in lab.config.node_numbers]
        times = {}
        started = time.monotonic()
        with L7Load(lab.client_netns(), targets, HOST, pause=0.02, limit=20000) as load:
            with ThreadPoolExecutor(4) as pool:
                names = list(pool.map(lambda i: _create(lab, i), range(CHURN)))
            times["created"] = time.monotonic() - started
            wait_for(f"{last_with_task} served by every proxy", timeout=180, interval=1,
                     check=lambda: served_by_every_replica(lab, DEFAULT_PROXY, last_with_task))
            times["routed"] = time.monotonic() - started
            lab.docker(1, "service", "rm", *names, timeout=300)
            times["removed"] = time.monotonic() - started
            wait_for("every churn service gone", lambda: not _churn_services(lab), timeout=180, interval=1)
            wait_for(f"{last_with_task} unrouted", timeout=120, interval=1,
                     check=lambda: served_by_every_replica(lab, DEFAULT_PROXY, last_with_task, status=404))
            times["unrouted"] = time.monotonic() - started
            time.sleep(3)  # and a little more load once it is all over
        result = load.result
        print(f"mass churn: {CHURN} labelled services ({CHURN // WITH_TASK} with a task); "
              + ", ".join(f"{k} at {v:.1f} s" for k, v in times.items())
              + f"; {result.ok} requests to {HOST} through {len(targets)} nodes, {len(result.failures)} failed")
        assert result.failures == [], (f"{len(result.failures)} failed from {result.failures[0][0] - started:.1f} s "
                                       f"to {result.failures[-1][0] - started:.1f} s ({times}): {result.failures[:6]}")
        assert result.ok >= 200 and sum(result.seen.values()) == result.ok
        assert sorted(cid for _, cid, _ in replicas(lab, DEFAULT_PROXY)) == proxies, \
            "a proxy task was replaced (its health check failed under load?)"
    finally:
        leftover = _churn_services(lab)
        if leftover:
            lab.docker(1, "service", "rm", *leftover, check=False, timeout=300)
        lab.docker(1, "service", "rm", "steady", check=False)
