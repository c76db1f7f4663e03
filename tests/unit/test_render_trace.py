"""The renderer and NftBackend driven through FakeNft, with traffic asserted by the tracer.

Rootless: nothing here touches the kernel.  Each test states what a packet does, so a
renderer change that breaks the data plane fails here, not in a lab.
"""
from __future__ import annotations

import dataclasses

import pytest

from ingressmesh.nft.backend import NftBackend, NftError
from ingressmesh.nft.fake import FakeNft, FakeRule
from ingressmesh.nft.reader import state_from_json
from ingressmesh.nft.tracer import FROM_OUTSIDE, LOCALLY_GENERATED, TraceError, trace
from ingressmesh.plan import ACTIVE, Backend
from ingressmesh.dataplane.view import Row

HOST_LOCAL = frozenset({"10.9.0.1", "172.18.0.1"})
INGRESS_LOCAL = frozenset({"172.18.0.2", "10.255.0.2"})
LB_LOCAL = frozenset({"10.0.1.2", "10.0.1.10", "10.0.1.11"})  # Docker puts VIPs on the LB endpoint
CLIENT = "10.0.1.99"


@pytest.fixture
def tasks(swarm):
    """web: .20 and .21 active, .22 draining, .23 still starting, .24 failed; api: no task."""
    return [swarm.task("t20", "web", "n1", 20), swarm.task("t21", "web", "n2", 21),
            swarm.draining("t22", "web", "n2", 22), swarm.task("t23", "web", "n1", 23, health="starting"),
            swarm.task("t24", "web", "n2", 24, current_state="failed")]


def test_vip_balances_over_exactly_the_active_backends(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    for proto in ("tcp", "udp"):
        result = trace(fake, CLIENT, proto, swarm.web_vip, 443, local=LB_LOCAL)
        assert result.verdict == "accept"
        assert result.destinations == {("10.0.1.20", 443), ("10.0.1.21", 443)}
        assert result.always_dnat
        assert result.snat == swarm.lb_address
    # The same when the VIP is not local and the packet is forwarded.
    forwarded = trace(fake, CLIENT, "tcp", swarm.web_vip, 443)
    assert forwarded.destinations == {("10.0.1.20", 443), ("10.0.1.21", 443)}
    assert forwarded.snat == swarm.lb_address
    # Traffic that is not for a VIP goes through untouched.
    other = trace(fake, CLIENT, "tcp", "10.0.1.20", 443, local=LB_LOCAL)
    assert (other.verdict, other.destinations, other.snat) == ("accept", frozenset(), None)


def test_host_role_dnats_published_ports_to_the_ingress_namespace(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "host"))
    for proto, port in (("tcp", 8080), ("udp", 5353), ("tcp", 9090), ("udp", 9053)):
        result = trace(fake, "192.0.2.7", proto, swarm.node_address, port, local=HOST_LOCAL)
        assert (result.verdict, result.destinations, result.snat) == ("accept", {(swarm.gateway, port)}, None)
        local = trace(fake, swarm.node_address, proto, swarm.node_address, port,
                      hook_path=LOCALLY_GENERATED, local=HOST_LOCAL)
        assert local.destinations == {(swarm.gateway, port)}
    untouched = [
        trace(fake, "192.0.2.7", "tcp", swarm.node_address, 5353, local=HOST_LOCAL),  # udp only
        trace(fake, "192.0.2.7", "tcp", swarm.node_address, 7000, local=HOST_LOCAL),  # host-mode port
        trace(fake, "192.0.2.7", "tcp", "10.9.0.2", 8080, local=HOST_LOCAL),  # not for this node
        trace(fake, "127.0.0.1", "tcp", "127.0.0.1", 8080, hook_path=LOCALLY_GENERATED, local=HOST_LOCAL),
    ]
    assert all(t.verdict == "accept" and not t.destinations for t in untouched)


def test_ingress_role_maps_published_port_to_tasks_and_snats(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "ingress"))
    web = trace(fake, "172.18.0.1", "tcp", swarm.gateway, 8080, local=INGRESS_LOCAL)
    assert web.verdict == "accept" and web.always_dnat
    assert web.destinations == {("10.255.0.20", 80), ("10.255.0.21", 80)}
    assert web.snat == swarm.ingress_address
    dns = trace(fake, "172.18.0.1", "udp", swarm.ingress_address, 5353, local=INGRESS_LOCAL)
    assert dns.destinations == {("10.255.0.20", 53), ("10.255.0.21", 53)}
    assert dns.snat == swarm.ingress_address


@pytest.mark.parametrize("proto,port,verdict", [("tcp", 9090, "reject-tcp-reset"), ("udp", 9053, "reject-icmp")])
def test_published_port_without_eligible_task_is_refused(swarm, fake, backend, tasks, proto, port, verdict):
    backend.apply(swarm.plan(tasks, "ingress"))
    result = trace(fake, "172.18.0.1", proto, swarm.gateway, port, local=INGRESS_LOCAL)
    assert (result.verdict, result.destinations, result.snat) == (verdict, frozenset(), None)


@pytest.mark.parametrize("local", [LB_LOCAL, frozenset()], ids=["input", "forward"])
@pytest.mark.parametrize("proto,verdict", [("tcp", "reject-tcp-reset"), ("udp", "reject-icmp")])
def test_vip_without_eligible_task_is_refused(swarm, fake, backend, tasks, local, proto, verdict):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    result = trace(fake, CLIENT, proto, swarm.api_vip, 80, local=local)
    assert (result.verdict, result.destinations) == (verdict, frozenset())


def test_draining_backends_are_never_dnat_targets_but_are_shown(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    assert ("10.0.1.22", 443) not in trace(fake, CLIENT, "tcp", swarm.web_vip, 443, local=LB_LOCAL).destinations
    rows = {row.frontend: row for row in backend.read()}
    assert rows["10.0.1.10 (tcp+udp, all ports)"] == Row(
        "10.0.1.10 (tcp+udp, all ports)", "web",
        (("10.0.1.20", "active"), ("10.0.1.21", "active"), ("10.0.1.22", "draining")))
    assert rows["10.0.1.11 (tcp+udp, all ports)"].note == "no eligible task: new connections refused"

    ingress = NftBackend(FakeNft())
    ingress.apply(swarm.plan(tasks, "ingress"))
    assert ("10.255.0.22", 80) not in trace(ingress.runner, "172.18.0.1", "tcp", swarm.gateway, 8080,
                                            local=INGRESS_LOCAL).destinations
    assert ("10.255.0.22:80", "draining") in {r.frontend: r for r in ingress.read()}["tcp/8080"].backends


def test_the_fake_holds_exactly_what_the_backend_applied(swarm, tasks):
    for key in ("host", "ingress", "lb:appnet"):
        fake = FakeNft()
        backend = NftBackend(fake)
        backend.apply(swarm.plan(tasks, key))
        listed = state_from_json(fake.list_table())
        assert (listed.role, listed.chains, listed.elements) == (
            backend.applied.role, backend.applied.chains, backend.applied.elements)


def test_reapplying_the_same_plan_sends_nothing(swarm, fake, backend, tasks):
    assert backend.apply(swarm.plan(tasks, "lb:appnet")).full
    assert backend.apply(swarm.plan(tasks, "lb:appnet")) is None
    assert len(fake.scripts) == 1


def test_a_replaced_task_is_an_element_diff(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    moved = [t for t in tasks if t["id"] != "t21"] + [swarm.task("t25", "web", "n2", 25)]
    tx = backend.apply(swarm.plan(moved, "lb:appnet"))
    # vip_backends (10.0.1.10, 1) now points at .25 instead of .21: one out, one in.
    assert (tx.full, tx.removed, tx.added) == (False, 1, 1)
    assert "table" not in tx.script
    assert trace(fake, CLIENT, "tcp", swarm.web_vip, 80, local=LB_LOCAL).destinations == {
        ("10.0.1.20", 80), ("10.0.1.25", 80)}
    assert fake.forgotten == ["10.0.1.21"]


def test_scaling_a_vip_adds_a_pick_chain_in_a_diff(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    scaled = tasks + [swarm.task("t26", "web", "n1", 26)]
    tx = backend.apply(swarm.plan(scaled, "lb:appnet"))
    # vip_services changes its goto (1 out, 1 in) and one vip_backends element is added.
    assert (tx.full, tx.removed, tx.added) == (False, 1, 2)
    assert "chain pick_vip_3 {" in tx.script
    assert trace(fake, CLIENT, "udp", swarm.web_vip, 53, local=LB_LOCAL).destinations == {
        ("10.0.1.20", 53), ("10.0.1.21", 53), ("10.0.1.26", 53)}
    assert fake.forgotten == []


def test_a_replaced_task_behind_a_published_port_is_an_element_diff(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "ingress"))
    moved = [t for t in tasks if t["id"] != "t21"] + [swarm.task("t25", "web", "n2", 25)]
    tx = backend.apply(swarm.plan(moved, "ingress"))
    # index 1 of tcp/8080 and of udp/5353 moves from .21 to .25.
    assert (tx.full, tx.removed, tx.added) == (False, 2, 2)
    assert trace(fake, "172.18.0.1", "tcp", swarm.gateway, 8080, local=INGRESS_LOCAL).destinations == {
        ("10.255.0.20", 80), ("10.255.0.25", 80)}
    assert fake.forgotten == ["10.255.0.21"]


def test_scaling_a_published_service_adds_a_pick_chain_in_a_diff(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "ingress"))
    tx = backend.apply(swarm.plan(tasks + [swarm.task("t26", "web", "n1", 26)], "ingress"))
    # tcp/8080 and udp/5353 change their goto (2 out, 2 in) and each gains index 2 (2 in).
    assert (tx.full, tx.removed, tx.added) == (False, 2, 4)
    assert "chain pick_port_3 {" in tx.script
    assert trace(fake, "172.18.0.1", "tcp", swarm.gateway, 8080, local=INGRESS_LOCAL).destinations == {
        ("10.255.0.20", 80), ("10.255.0.21", 80), ("10.255.0.26", 80)}


def test_a_refused_transaction_changes_nothing(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    before, applied, scripts = fake.list_table(), backend.applied, list(fake.scripts)
    plan = swarm.plan(tasks, "lb:appnet")
    web = plan.vips[0]  # the planner trusts its input, so a bad address reaches the renderer
    web = dataclasses.replace(web, backends=web.backends + (Backend("t99", "10.0.1.300", 0, ACTIVE),))
    broken = dataclasses.replace(plan, vips=(web,) + plan.vips[1:])
    with pytest.raises(NftError, match="10.0.1.300"):
        backend.apply(broken)
    assert fake.list_table() == before
    assert backend.applied is applied
    assert fake.scripts == scripts and fake.forgotten == []


def test_backends_that_leave_the_plan_are_forgotten(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    assert fake.forgotten == []
    # Drain grace over: .22 leaves the plan, so its connections must be forgotten.
    backend.apply(swarm.plan(tasks, "lb:appnet", now=swarm.now + 60))
    assert fake.forgotten == ["10.0.1.22"]
    # An active task that starts draining keeps its connections for now.
    later = swarm.now + 60
    stopping = [t for t in tasks if t["id"] != "t21"] + [swarm.draining("t21", "web", "n2", 21, now=later)]
    assert backend.apply(swarm.plan(stopping, "lb:appnet", now=later)) is not None
    assert fake.forgotten == ["10.0.1.22"]
    assert ("10.0.1.21", "draining") in backend.read()[0].backends


def test_cleanup_removes_the_table(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    backend.cleanup()
    assert fake.list_table() is None and fake.tables == {}
    assert backend.read() == [] and backend.applied is None
    backend.cleanup()  # idempotent
    assert backend.apply(swarm.plan(tasks, "lb:appnet")).full


def test_a_hole_in_a_pick_map_shows_as_a_packet_that_is_not_dnated(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    fake.run_script("delete element ip ingressmesh vip_backends { 10.0.1.10 . 1 }\n")
    result = trace(fake, CLIENT, "tcp", swarm.web_vip, 80, local=LB_LOCAL)
    assert not result.always_dnat
    assert result.destinations == {("10.0.1.20", 80)}
    with pytest.raises(TraceError, match="disagree on the SNAT"):
        result.snat


def test_the_tracer_fails_loudly_on_an_unknown_rule(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    fake.table().chains["prerouting"].rules.insert(0, FakeRule("ip saddr 10.0.1.99 counter accept", 999))
    with pytest.raises(TraceError, match="ip saddr 10.0.1.99 counter accept"):
        trace(fake, CLIENT, "tcp", swarm.web_vip, 80, local=LB_LOCAL)
    with pytest.raises(TraceError, match="hook_path"):
        trace(fake, CLIENT, "tcp", swarm.web_vip, 80, hook_path="input")


def test_the_tracer_fails_loudly_on_a_missing_set(swarm, fake, backend, tasks):
    backend.apply(swarm.plan(tasks, "lb:appnet"))
    del fake.table().sets["vip_services"]
    with pytest.raises(TraceError, match="vip_services"):
        trace(fake, CLIENT, "tcp", swarm.web_vip, 80, hook_path=FROM_OUTSIDE, local=LB_LOCAL)


def test_long_names_do_not_block_the_sync(swarm, fake, backend):
    plan = swarm.plan([swarm.task("t" * 70, "web", "n1", 20)], "lb:appnet")
    long_name = dataclasses.replace(plan.vips[0], service="s" * 63)
    backend.apply(dataclasses.replace(plan, vips=(long_name,) + plan.vips[1:]))
    assert trace(fake, CLIENT, "tcp", swarm.web_vip, 80, local=LB_LOCAL).destinations == {("10.0.1.20", 80)}


def test_comment_text_cannot_break_out_of_its_quotes(swarm, fake, backend):
    plan = swarm.plan([swarm.task("t1", "web", "n1", 20)], "lb:appnet")
    hostile = dataclasses.replace(plan.vips[0], service='web"; flush ruleset; "')
    backend.apply(dataclasses.replace(plan, vips=(hostile,) + plan.vips[1:]))
    assert trace(fake, CLIENT, "tcp", swarm.web_vip, 80, local=LB_LOCAL).destinations == {("10.0.1.20", 80)}
