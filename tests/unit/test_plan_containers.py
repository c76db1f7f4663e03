"""The VIP fast path's pure parts: container namespace plans share the LB namespaces' entries,
opt-outs and held networks stay on the LB path, the nftables table DNATs only new connections
in the output hook (no SNAT), and `docker inspect` yields the facts only for real namespaces."""
import dataclasses

from ingressmesh.nft.render import desired_state
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.plan_containers import LocalContainer, plan_containers
from ingressmesh.swarm.local_containers import container_facts
from ingressmesh.testbed.cluster import APP_ID, EMPTY_VIP, WEB_VIP, scenario_cluster
from ingressmesh.testbed.topology import Testbed

CLUSTER = scenario_cluster(Testbed(prefix="unit"))


def _plan(cluster=CLUSTER, containers=(LocalContainer("c1", "caller", (APP_ID,)),)):
    return plan_containers(plan_node(cluster, "node1", PlanOptions(now=1.0)), containers)


def test_a_container_gets_its_networks_vips_as_the_lb_namespace_has_them():
    plan = _plan()
    lb, ctr = plan.namespace(f"lb:{APP_ID}"), plan.namespace("ctr:c1")
    assert ctr.role == "container" and ctr.container_name == "caller" and ctr.snat_address == ""
    assert ctr.vips == lb.vips and all(a is b for a, b in zip(ctr.vips, lb.vips))  # the very same entries
    assert {WEB_VIP, EMPTY_VIP} <= {e.vip for e in ctr.vips}


def test_containers_off_the_planned_networks_and_opted_out_services_stay_on_the_lb_path():
    plan = _plan(containers=(LocalContainer("c2", "bridge-only", ("some-bridge",)),))
    assert plan.namespace("ctr:c2") is None and plan == plan_node(CLUSTER, "node1", PlanOptions(now=1.0))
    web = next(s for s in CLUSTER.services if s.name == "web")
    out = dataclasses.replace(web, labels=(("io.ingressmesh.lb.fast_path", "false"),))
    cluster = dataclasses.replace(CLUSTER, services=tuple(out if s is web else s for s in CLUSTER.services))
    ctr = _plan(cluster).namespace("ctr:c1")
    assert WEB_VIP not in {e.vip for e in ctr.vips}
    bad = dataclasses.replace(web, labels=(("io.ingressmesh.lb.fast_path", "maybe"),))
    cluster = dataclasses.replace(CLUSTER, services=tuple(bad if s is web else s for s in CLUSTER.services))
    plan = _plan(cluster)
    assert WEB_VIP in {e.vip for e in plan.namespace("ctr:c1").vips}
    assert any("io.ingressmesh.lb.fast_path='maybe' is not true or false" in w for w in plan.warnings)


def test_a_held_lb_namespace_adds_nothing_to_its_containers():
    app = next(n for n in CLUSTER.networks if n.id == APP_ID)
    no_lb = dataclasses.replace(app, lb_addresses=tuple(a for a in app.lb_addresses if a.node_id != "node1"))
    cluster = dataclasses.replace(CLUSTER, networks=tuple(no_lb if n is app else n for n in CLUSTER.networks))
    plan = _plan(cluster)
    assert plan.namespace(f"lb:{APP_ID}") is None and plan.namespace("ctr:c1") is None
    assert any(key == "ctr:c1" and "container caller" in why for key, why in plan.held)  # kept as programmed


def test_the_container_table_dnats_new_connections_in_the_output_hook_without_snat():
    table = desired_state(_plan().namespace("ctr:c1"))
    assert "type nat hook output" in table.skeleton and "snat" not in table.skeleton
    assert "tcp flags & (fin | syn | rst | ack) != syn return" in table.skeleton
    assert "prerouting" not in table.skeleton and "postrouting" not in table.skeleton
    assert any(e.set == "vip_services" and e.key == (WEB_VIP,) for e in table.elements)


def test_container_facts_from_docker_inspect():
    inspected = {"Id": "abc", "Name": "/caller", "State": {"Running": True},
                 "HostConfig": {"NetworkMode": "ovl"},
                 "NetworkSettings": {"SandboxKey": "/var/run/docker/netns/0123456789ab",
                                     "Networks": {"ovl": {"NetworkID": "net1"}, "other": {"NetworkID": "net0"}}}}
    facts = container_facts(inspected)
    assert (facts.id, facts.name, facts.network_ids, facts.sandbox) == ("abc", "caller", ("net0", "net1"),
                                                                         "0123456789ab")
    assert container_facts({**inspected, "State": {"Running": False}}) is None
    assert container_facts({**inspected, "HostConfig": {"NetworkMode": "host"}}) is None
    assert container_facts({**inspected, "HostConfig": {"NetworkMode": "container:xyz"}}) is None
    assert container_facts({**inspected, "NetworkSettings": {"SandboxKey": "", "Networks": {}}}) is None
    assert facts.fast_path == ""
    labelled = container_facts({**inspected, "Config": {"Labels": {"io.ingressmesh.fast_path": " True "}}})
    assert labelled.fast_path == "true"  # opts a container with rules of its own in


def test_containers_on_the_same_networks_share_one_entries_tuple():
    """One tuple per network set: the nftables backend renders a changed entry once for all."""
    plan = plan_containers(plan_node(CLUSTER, "node1", PlanOptions(now=1.0)),
                           [LocalContainer("a", "a", (APP_ID,)), LocalContainer("b", "b", (APP_ID,))])
    assert plan.namespace("ctr:a").vips is plan.namespace("ctr:b").vips
