"""Slot pools (churn without reloads) and the rendered config (nothing unchecked gets in)."""
import pytest

from ingressmesh.l7 import render, runtime, slots
from ingressmesh.l7.render import ProxySettings, RenderError, render_config, render_map, route_key
from ingressmesh.l7.routes import Backend, Route, RouteTable, Server
from ingressmesh.plan import ACTIVE, DRAINING


def srv(address, state=ACTIVE, port=80):
    return Server("web", f"t-{address}", "node1", address, port, state)


def table(*servers, name="be_web", routes=(Route("a.com", "/", "be_web"),)):
    return RouteTable(routes=tuple(routes), backends=(Backend(name, ("web",), servers=tuple(servers)),))


def test_servers_keep_their_slots_and_new_ones_fill_free_slots():
    first = slots.assign({}, table(srv("10.0.0.1"), srv("10.0.0.2"), srv("10.0.0.3")))
    assert len(first["be_web"]) == slots.BLOCK
    second = slots.assign(first, table(srv("10.0.0.3"), srv("10.0.0.4")))
    pool = second["be_web"]
    assert pool[2].address == "10.0.0.3"  # kept its slot
    assert pool[3].address == "10.0.0.4"  # a never-used slot before the freed ones
    assert pool[0] is None and pool[1] is None


def test_pools_grow_by_blocks_and_never_shrink():
    many = table(*[srv(f"10.0.0.{i}") for i in range(1, 18)])
    grown = slots.assign({}, many)
    assert len(grown["be_web"]) == 2 * slots.BLOCK
    assert len(slots.assign(grown, table(srv("10.0.0.1")))["be_web"]) == 2 * slots.BLOCK


def test_runtime_changes_address_then_weight_then_state():
    old = slots.assign({}, table(srv("10.0.0.1"), srv("10.0.0.2")))
    new = slots.assign(old, table(srv("10.0.0.1", DRAINING), srv("10.0.0.5")))
    commands = [c for change in runtime.changes(old, new) for c, _ in change.commands()]
    assert commands == [
        "set server be_web/s1 addr 10.0.0.1 port 80", "set weight be_web/s1 0", "set server be_web/s1 state ready",
        "set server be_web/s2 state maint",
        "set server be_web/s3 addr 10.0.0.5 port 80", "set weight be_web/s3 1", "set server be_web/s3 state ready"]


def test_a_health_note_alone_sends_nothing():
    old = slots.assign({}, table(srv("10.0.0.1")))
    renamed = Server("web", "other-task-id", "node2", "10.0.0.1", 80, ACTIVE, "healthy")
    assert runtime.changes(old, slots.assign(old, table(renamed))) == []


def test_config_holds_the_slot_assignment_and_the_map_the_routes():
    t = RouteTable(routes=(Route("a.com", "/api", "be_web"), Route("a.com", "/", "be_web")),
                   backends=(Backend("be_web", ("web",), strip_prefix="/api", servers=(srv("10.0.0.1"), srv("10.0.0.2", DRAINING))),))
    text = render_config(t, slots.assign({}, t), ProxySettings(map_file="/tmp/r.map"))
    assert "server s1 10.0.0.1:80 weight 1" in text and "server s2 10.0.0.2:80 weight 0" in text
    assert "server s3 127.0.0.1:1 disabled weight 0" in text
    assert r"http-request replace-path '^/api/?(.*)$' '/\1'" in text
    assert render_map(t) == "a.com/api/ be_web\na.com/ be_web\n"


def test_values_that_slipped_past_the_grammar_never_reach_the_text():
    for host in ('a.com"x', "a.com\nfrontend evil", "a b", "a#b"):
        with pytest.raises(RenderError):
            route_key(host, "/")
    evil = RouteTable(routes=(Route("a.com", "/", "be_x"),), backends=(Backend("be_x", ("x",), servers=(srv("1.2.3.4\n"),)),))
    with pytest.raises(RenderError):
        render_config(evil, slots.assign({}, evil), ProxySettings())
