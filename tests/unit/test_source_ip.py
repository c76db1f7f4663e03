"""Issue 21, pure part: label io.ingressmesh.lb.source_ip, the ingress rules it changes (traced
through FakeNft) and the reply routes planned for a source-keeping service's local tasks."""
from __future__ import annotations

import copy

import pytest

from ingressmesh import snapshot
from ingressmesh.dataplane.view import SOURCE_KEPT
from ingressmesh.model import Service
from ingressmesh.nft.tracer import trace
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.plan_source_ip import (SOURCE_IP_LABEL, docker_overlay_mac, mark_of, plan_reply_routes,
                                        source_ip_of)

from small_swarm import _BASE, NOW

INGRESS_LOCAL = frozenset({"172.18.0.2", "10.255.0.2"})


def _cluster(web_label=None, api_label=None, tasks=()):
    data = copy.deepcopy(_BASE)
    for service, value in (("web", web_label), ("api", api_label)):
        if value is not None:
            next(s for s in data["services"] if s["id"] == service)["labels"] = {SOURCE_IP_LABEL: value}
    data["tasks"] = list(tasks)
    return snapshot.from_dict(data)


def _task(task_id, service, node, host):
    return {"id": task_id, "service_id": service, "node_id": node,
            "addresses": [{"network_id": "appnet", "address": f"10.0.1.{host}"},
                          {"network_id": "ingressnet", "address": f"10.255.0.{host}"}]}


TASKS = (_task("w1", "web", "n1", 20), _task("w2", "web", "n2", 21), _task("a1", "api", "n1", 30))


@pytest.mark.parametrize("value,kept", [("preserve", True), (" Preserve ", True), ("snat", False), ("SNAT", False)])
def test_label_values(value, kept):
    assert source_ip_of(Service("s", "svc", labels=((SOURCE_IP_LABEL, value),))) == (kept, ())


def test_no_label_follows_the_agent_wide_default():
    assert source_ip_of(Service("s", "svc")) == (False, ())
    assert source_ip_of(Service("s", "svc"), default="preserve") == (True, ())
    # The label wins over the default both ways.
    assert source_ip_of(Service("s", "svc", labels=((SOURCE_IP_LABEL, "snat"),)), default="preserve") == (False, ())


@pytest.mark.parametrize("value", ["yes", "", "preserve,snat", "x" * 300])
def test_a_bad_value_is_named_and_keeps_the_default(value):
    kept, warnings = source_ip_of(Service("s", "shop", labels=((SOURCE_IP_LABEL, value),)))
    assert kept is False
    assert len(warnings) == 1 and "service shop" in warnings[0] and SOURCE_IP_LABEL in warnings[0]
    assert len(warnings[0]) < 200  # a long value is cut, not echoed whole


def test_plan_marks_only_the_labelled_service_ports():
    plan = plan_node(_cluster(web_label="preserve", tasks=TASKS), "n1", PlanOptions(now=NOW))
    ports = {(p.service, p.protocol): p.keep_source for p in plan.namespace("ingress").ports}
    assert ports == {("web", "tcp"): True, ("web", "udp"): True, ("api", "tcp"): False, ("api", "udp"): False}
    assert not plan.warnings


def test_bad_label_refused_by_name_others_unaffected():
    good = plan_node(_cluster(web_label="preserve", tasks=TASKS), "n1", PlanOptions(now=NOW))
    bad = plan_node(_cluster(web_label="preserve", api_label="keep", tasks=TASKS), "n1", PlanOptions(now=NOW))
    assert [w for w in bad.warnings if "api" in w and SOURCE_IP_LABEL in w]
    assert bad.namespace("ingress") == good.namespace("ingress")  # api stays SNATed, web keeps its choice


def test_ingress_rules_skip_snat_only_for_source_keeping_services(fake, backend):
    backend.apply(plan_node(_cluster(web_label="preserve", tasks=TASKS), "n1", PlanOptions(now=NOW)).namespace("ingress"))
    for proto, port, target in (("tcp", 8080, 80), ("udp", 5353, 53)):
        web = trace(fake, "172.18.0.1", proto, "172.18.0.2", port, local=INGRESS_LOCAL)
        assert web.destinations == {("10.255.0.20", target), ("10.255.0.21", target)}
        assert web.verdict == "accept" and web.snat is None  # the task sees the client
    api = trace(fake, "172.18.0.1", "tcp", "172.18.0.2", 9090, local=INGRESS_LOCAL)
    assert api.destinations == {("10.255.0.30", 90)} and api.snat == "10.255.0.2"
    # Taking the label away brings SNAT back for new connections.
    backend.apply(plan_node(_cluster(tasks=TASKS), "n1", PlanOptions(now=NOW)).namespace("ingress"))
    assert trace(fake, "172.18.0.1", "tcp", "172.18.0.2", 8080, local=INGRESS_LOCAL).snat == "10.255.0.2"


def test_show_notes_each_published_port_that_keeps_source_addresses(fake, backend):
    """`ingressmesh show` (the backend's rows, read back from the table) says it per published port."""
    backend.apply(plan_node(_cluster(web_label="preserve", tasks=TASKS), "n1", PlanOptions(now=NOW)).namespace("ingress"))
    notes = {row.frontend: (row.service, row.note) for row in backend.read()}
    assert notes == {"tcp/8080": ("web", SOURCE_KEPT), "udp/5353": ("web", SOURCE_KEPT),
                     "tcp/9090": ("api", ""), "udp/9053": ("api", "")}, notes


def test_ipvs_marks_source_keeping_ports_and_accepts_them_before_its_snat():
    from ingressmesh.ipvs.desired import allocate_marks, mark_elements
    from ingressmesh.ipvs.rules import skeleton
    ingress = plan_node(_cluster(web_label="preserve", tasks=TASKS), "n1", PlanOptions(now=NOW)).namespace("ingress")
    marks = allocate_marks(ingress, {})
    kept = {e.key[0]: e.comment for e in mark_elements(ingress, marks) if e.set == "keep_source_marks"}
    assert kept == {marks[("port", "tcp", 8080)]: "web", marks[("port", "udp", 5353)]: "web"}
    rules = skeleton(ingress)
    assert rules.index("meta mark @keep_source_marks accept") < rules.index("snat ip to 10.255.0.2")


def test_docker_overlay_mac_and_mark():
    assert docker_overlay_mac("10.255.0.2") == "02:42:0a:ff:00:02"
    assert mark_of("10.255.0.2") == 0x0AFF0002


def test_reply_routes_for_local_tasks_of_source_keeping_services():
    cluster = _cluster(web_label="preserve", tasks=TASKS)
    containers = {"w1": "c-w1", "w2": "c-w2", "a1": "c-a1"}
    routes = plan_reply_routes(cluster, "n1", containers)
    assert [(r.container_id, r.task_id, r.service, r.address, r.udp_ports) for r in routes] == [
        ("c-w1", "w1", "web", "10.255.0.20", (53,))]
    peers = routes[0].peers
    assert [(p.node_id, p.address, p.mac, p.mark) for p in peers] == [
        ("n1", "10.255.0.2", "02:42:0a:ff:00:02", 0x0AFF0002), ("n2", "10.255.0.3", "02:42:0a:ff:00:03", 0x0AFF0003)]
    assert [r.task_id for r in plan_reply_routes(cluster, "n2", containers)] == ["w2"]
    # A task whose container is not known yet waits; a service without the label gets nothing.
    assert plan_reply_routes(cluster, "n1", {"a1": "c-a1"}) == ()
    assert plan_reply_routes(_cluster(tasks=TASKS), "n1", containers) == ()
    assert [r.task_id for r in plan_reply_routes(_cluster(tasks=TASKS), "n1", containers, default="preserve")] == [
        "a1", "w1"]


def test_agent_programs_each_local_task_once_and_retries_failures():
    from ingressmesh.agent.source_routes import SourceRoutes
    from ingressmesh.dataplane.reply_routes import ReplyRoutesError
    from ingressmesh.swarm.local_containers import ContainerFacts

    calls, failing = [], {"c-w1"}

    def apply(netns, routes):
        calls.append((netns.path, routes.task_id))
        if routes.container_id in failing:
            raise ReplyRoutesError(f"task web/{routes.task_id}: nope")
        return "eth0"

    facts = [ContainerFacts("c-w1", "web.1", ("ingressnet",), "sb1", task_id="w1"),
             ContainerFacts("c-x", "other", ("ingressnet",), "sb2")]
    cluster = _cluster(web_label="preserve", tasks=TASKS)
    routes = SourceRoutes(apply=apply)
    routes.sync(cluster, "n1", facts, "/run/docker/netns")
    assert calls == [("/run/docker/netns/sb1", "w1")]
    assert list(routes.errors) == ["src:c-w1"] and "web/w1" in routes.errors["src:c-w1"]
    failing.clear()
    routes.sync(cluster, "n1", facts, "/run/docker/netns")  # retried
    routes.sync(cluster, "n1", facts, "/run/docker/netns")  # unchanged: not rewritten
    routes.sync(None, "n1", facts, "/run/docker/netns")  # no source-keeping service now: nothing taken away
    assert len(calls) == 2 and routes.errors == {} and routes.status() == {"tasks": 1, "errors": {}}
    # A third node joins: its ingress namespace is a new way back, so the task is reprogrammed.
    data = copy.deepcopy(_BASE)
    data["nodes"].append({"id": "n3", "hostname": "node3", "address": "10.9.0.3"})
    data["networks"][0]["lb_addresses"].append({"node_id": "n3", "address": "10.255.0.4"})
    data["services"][0]["labels"] = {SOURCE_IP_LABEL: "preserve"}
    data["tasks"] = list(TASKS)
    routes.sync(snapshot.from_dict(data), "n1", facts, "/run/docker/netns")
    assert len(calls) == 3


@pytest.mark.parametrize("argv,env,expected", [([], {}, "snat"), (["--source-ip", "preserve"], {}, "preserve"),
                                               ([], {"INGRESSMESH_SOURCE_IP": "preserve"}, "preserve")])
def test_agent_flag_sets_the_agent_wide_default(tmp_path, monkeypatch, argv, env, expected):
    """`ingressmesh agent --source-ip` (or INGRESSMESH_SOURCE_IP) reaches AgentConfig.source_ip,
    which the agent's planner and its task reply routes both use."""
    import threading

    from click.testing import CliRunner

    from ingressmesh.agent import app, writable_sysctls
    from ingressmesh.cli import daemons
    from ingressmesh.daemon.credentials import node_credential

    started = []

    class Recorded:
        def __init__(self, config, token, node_id):
            started.append(config)

        def run(self, stop, notifier, leave):
            pass

    monkeypatch.setattr(app, "Agent", Recorded)
    monkeypatch.setattr(writable_sysctls, "ensure_writable_sysctls", lambda: None)
    monkeypatch.setattr(daemons, "_stop_on_signals", threading.Event)
    token = tmp_path / "token"
    token.write_text(node_credential("s" * 32, "n1") + "\n")
    token.chmod(0o600)
    result = CliRunner().invoke(daemons.agent_command, ["--controller", "http://127.0.0.1:1", "--token-file",
                                                        str(token), "--node-id", "n1", *argv], env=env)
    assert result.exit_code == 0, result.output
    assert [c.source_ip for c in started] == [expected]
    assert app.AgentConfig(controllers=()).source_ip == "snat"


def test_agent_flag_refuses_other_values():
    from click.testing import CliRunner

    from ingressmesh.cli.daemons import agent_command
    result = CliRunner().invoke(agent_command, ["--source-ip", "keep"])
    assert result.exit_code == 2 and "'keep' is not one of 'snat', 'preserve'" in result.output
