"""Where an agent sends published ports from the node's namespace: ingress_sbox's address on
docker_gwbridge, read from the local dockerd.  Its first apply waits (bounded) for that read, and a
new address (dockerd made ingress_sbox again) re-plans at once, not at the next snapshot."""
from __future__ import annotations

import json
import logging
import pathlib
import threading
import time

from ingressmesh.agent import app
from ingressmesh.agent.app import Agent, AgentConfig, host_forward
from ingressmesh.plan import NamespacePlan, NodePlan
from ingressmesh.swarm.local import LocalFacts
from test_swarm_provider import FakeDocker

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "swarm_api.json").read_text())


def _facts_with_bridge(bridge: dict, seen: list) -> LocalFacts:
    api = FakeDocker(DATA)
    api.inspect_network = (lambda network_id: bridge if network_id == "docker_gwbridge"
                           else FakeDocker.inspect_network(api, network_id))
    return LocalFacts(lambda: api, "unix:///fake/node.sock", "node-x", lambda report: None, refresh=30,
                      on_gateway=seen.append)


def test_the_gateway_is_said_when_first_read_and_when_it_moves_never_when_unread():
    bridge = {"Containers": {"ingress-sbox": {"IPv4Address": "172.18.0.3/16"}}}
    seen: list[str] = []
    facts = _facts_with_bridge(bridge, seen)
    facts._resync()
    assert facts.ready.is_set() and facts.ingress_gateway == "172.18.0.3" and seen == ["172.18.0.3"]
    facts._resync()  # the same address again: nothing to re-plan
    assert seen == ["172.18.0.3"]
    bridge["Containers"]["ingress-sbox"]["IPv4Address"] = "172.18.0.5/16"  # ingress_sbox made again
    facts._refresh_networks()
    assert facts.ingress_gateway == "172.18.0.5" and seen == ["172.18.0.3", "172.18.0.5"]
    del bridge["Containers"]["ingress-sbox"]  # gone for a moment (dockerd restarting): keep the last
    facts._resync()
    assert facts.ingress_gateway == "172.18.0.5" and seen == ["172.18.0.3", "172.18.0.5"]


def _agent() -> Agent:
    return Agent(AgentConfig(controllers=("http://127.0.0.1:9",), backend="nftables", listen=("127.0.0.1", 0)),
                 "token", "node-x")


def _plan(forward_to: str) -> NodePlan:
    return NodePlan(node_id="node-x", namespaces=(NamespacePlan(role="host", forward_to=forward_to, ports=()),))


def test_a_moved_gateway_re_plans_at_once_an_unchanged_one_does_not():
    agent = _agent()
    synced = []
    agent.sync = lambda: synced.append(agent.facts.ingress_gateway)
    agent._gateway_changed("172.18.0.3")  # nothing applied yet: the first sync will read it
    assert synced == []
    agent.plan = _plan("172.18.0.2")
    agent.facts.ingress_gateway = "172.18.0.3"
    agent._gateway_changed("172.18.0.3")
    assert synced == ["172.18.0.3"]
    agent.plan = _plan("172.18.0.3")
    agent._gateway_changed("172.18.0.3")  # what the plan already uses
    assert synced == ["172.18.0.3"]
    assert host_forward(NodePlan(node_id="node-x", namespaces=())) is None
    agent.plan = NodePlan(node_id="node-x", namespaces=())  # no published port at all: nothing to move
    agent._gateway_changed("172.18.0.9")
    assert synced == ["172.18.0.3"]
    agent.plan = _plan("172.18.0.2")
    agent.stopping.set()  # a stopping agent writes nothing more
    agent._gateway_changed("172.18.0.9")
    assert synced == ["172.18.0.3"]


def test_a_failed_re_plan_is_retried_soon_not_raised_into_the_docker_event_thread():
    agent = _agent()
    agent.plan = _plan("172.18.0.2")

    def broken():
        raise RuntimeError("nft: boom")
    agent.sync = broken
    agent._gateway_changed("172.18.0.3")
    assert agent.due is not None and agent.due - time.monotonic() <= app.RETRY
    assert "nft: boom" in agent.health.status()[1]["last_apply_error"]


def test_the_first_apply_waits_for_the_local_read_but_not_forever(monkeypatch, caplog):
    agent, stop = _agent(), threading.Event()
    threading.Timer(0.3, agent.facts.ready.set).start()
    started = time.monotonic()
    agent._await_facts(stop)
    assert 0.25 <= time.monotonic() - started < 2
    monkeypatch.setattr(app, "FACTS_WAIT", 0.4)
    agent = _agent()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        agent._await_facts(stop)
    assert 0.35 <= time.monotonic() - started < 2
    assert "not read after" in caplog.text and "172.18.0.2" in caplog.text
    stop.set()  # a stop while waiting ends the wait at once
    started = time.monotonic()
    _agent()._await_facts(stop)
    assert time.monotonic() - started < 0.5
