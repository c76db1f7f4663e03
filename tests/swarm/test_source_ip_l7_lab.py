"""Issue 21 test 3 on the real 3-node swarm: the L7 proxy service published in ingress mode with
l7.toml's SourceIP = "preserve" (its io.ingressmesh.lb.source_ip label) sees the client's own
address, so the app behind it finds the client namespace's address in X-Forwarded-For through
every node, and com.docker.lb.ip_hash keeps that client on one task through every node and
both proxy replicas (Interlock needed host-mode publishing for either)."""
from __future__ import annotations

import json

import pytest

from ingressmesh.lab import PYTHON_IMAGE
from ingressmesh.plan_source_ip import SOURCE_IP_LABEL
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.l7_probe import http_request
from l7_helpers import LB, labelled, proxies_deployed, replica_json, replicas, settled_replicas
from swarm_helpers import NETWORK, create_service, remove_service, wait_for, wait_running

PROXY, CLUSTER, PORT = "ingressmesh-proxy-srcip", "srcip", 8079
PER_NODE = 15


@pytest.fixture(scope="module")
def l7src(mesh):
    config = l7_lab.extension(CLUSTER, mesh.controller_url, PORT, cluster=CLUSTER, source_ip="preserve")
    yield from proxies_deployed(mesh, config, proxies=((PROXY, 2),))


def through_every_node(lab, host: str, count: int = PER_NODE) -> dict:
    """node -> the answers to `count` requests from the client namespace to its published port."""
    return {n: [http_request(lab.client_netns(), lab.node_address(n), PORT, host) for _ in range(count)]
            for n in lab.config.node_numbers}


def routed_by_both_replicas(lab, service: str, count: int) -> None:
    """Both replicas (after any rolling update `l7 deploy` makes to attach the network) hold the
    service's `count` tasks in their backend, and the proxy service is done rolling."""
    def servers(n: int, ip: str) -> int:
        backends = replica_json(lab, n, ip, "/v1/l7/state")[1]["backends"].values()
        return sum(len(b["slots"]) for b in backends if service in b["services"])
    wait_for(f"{count} servers of {service} in both replicas of {PROXY}",
             lambda: len(found := replicas(lab, PROXY)) == 2 and all(servers(n, ip) == count for n, _, ip in found),
             timeout=180, interval=0.5)
    for n, _, ip in settled_replicas(lab, PROXY, 2):
        assert servers(n, ip) == count, f"node{n}"


def routed_everywhere(lab, host: str) -> None:
    """Each node's published port answers 200 for host (the L4 mesh and both replicas ready)."""
    def ready():
        try:
            return all(a.status == 200 for a in through_every_node(lab, host, 2).values() for a in a)
        except OSError:
            return False
    wait_for(f"{host} through every node's port {PORT}", ready, timeout=90, interval=0.5)


def test_the_proxy_service_carries_the_label(l7src):
    spec = json.loads(l7src.lab.docker(1, "service", "inspect", PROXY).stdout)[0]["Spec"]
    assert spec["Labels"][SOURCE_IP_LABEL] == "preserve"
    assert [p["PublishMode"] for p in spec["EndpointSpec"]["Ports"]] == ["ingress"]


def test_the_app_sees_the_client_in_x_forwarded_for_through_every_node(l7src):
    lab = l7src.lab
    labelled(lab, "xff", "--replicas", "2", image=PYTHON_IMAGE, hosts="xff.srcip.l7", port="80",
             service_cluster=CLUSTER)
    try:
        wait_running(lab, "xff", 2)
        routed_by_both_replicas(lab, "xff", 2)
        routed_everywhere(lab, "xff.srcip.l7")
        found = through_every_node(lab, "xff.srcip.l7")
        nodes = sorted({n for n, _, _ in replicas(lab, PROXY)})
        for n, answers in found.items():
            print(f"node{n}: {len(answers)} answers, X-Forwarded-For "
                  f"{sorted({a.headers.get('x-seen-x-forwarded-for') for a in answers})}, "
                  f"proxies {sorted({a.headers.get('x-proxy-id') for a in answers})}")
            assert {a.status for a in answers} == {200}, f"node{n}"
            assert {a.headers["x-seen-x-forwarded-for"] for a in answers} == {lab.client_address}, f"node{n}"
        print(f"proxy replicas on nodes {nodes}: a node without one forwards over the ingress network")
    finally:
        remove_service(lab, "xff")


def test_ip_hash_keeps_one_client_on_one_task_through_every_node(l7src):
    lab = l7src.lab
    # The labels come once the 3 tasks run, so both replicas get them in one snapshot and give them
    # the same slots (HAProxy 2.6 hashes a server by its slot: docs/l7-routing.md, ip_hash).
    create_service(lab, "iph-src", "--replicas", "3", "--network", NETWORK, image=PYTHON_IMAGE)
    try:
        tasks = wait_running(lab, "iph-src", 3)
        lab.docker(1, "service", "update", "--detach", *[arg for key, value in (
            ("hosts", "iph.srcip.l7"), ("port", "80"), ("ip_hash", "true"), ("service_cluster", CLUSTER))
            for arg in ("--label-add", f"{LB}{key}={value}")], "iph-src")
        assert {t["id"] for t in wait_running(lab, "iph-src", 3)} == {t["id"] for t in tasks}  # not restarted
        routed_by_both_replicas(lab, "iph-src", 3)
        routed_everywhere(lab, "iph.srcip.l7")
        found = through_every_node(lab, "iph.srcip.l7")
        answers = [a for node_answers in found.values() for a in node_answers]
        proxies = {a.headers.get("x-proxy-id") for a in answers}
        print(f"ip_hash: {len(answers)} requests from {lab.client_address} through nodes {sorted(found)} "
              f"and proxies {sorted(proxies)} -> tasks {sorted({a.hostname for a in answers})}")
        assert {a.status for a in answers} == {200}
        assert {a.headers["x-seen-x-forwarded-for"] for a in answers} == {lab.client_address}
        assert len({a.hostname for a in answers}) == 1 and answers[0].hostname in {t["container"] for t in tasks}
    finally:
        remove_service(lab, "iph-src")
