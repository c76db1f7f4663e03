"""The applier against a real HAProxy: routing, runtime-only endpoint changes, reloads,
refused configs, a crashed haproxy — with real requests on loopback."""
from __future__ import annotations

import json
import os
import signal

from ingressmesh.l7.render import render_config
from swarm_real import NOW, Swarm, get, hits, master

def test_hosts_route_to_their_service_and_unknown_hosts_get_404(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com").service("b", hosts="b.com,www.b.com")
    a1, a2, b1 = swarm.task("a1", "a"), swarm.task("a2", "a"), swarm.task("b1", "b")
    assert proxy.apply(swarm.table()).how == "start"
    assert hits(proxy, "A.com:80") == {a1, a2}
    assert hits(proxy, "www.b.com") == {b1}
    status, headers, body = get(proxy, "nobody.com")
    assert status == 404 and b"no route" in body  # Interlock's answer (issue 20.3)
    status, headers, body = get(proxy, "a.com", "/x?y=1", {"X-Request-Id": "spoofed", "X-Forwarded-For": "6.6.6.6"})
    seen = json.loads(body)
    assert headers["x-request-id"] == seen["headers"]["x-request-id"] != "spoofed"
    assert seen["path"] == "/x?y=1"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1" and seen["headers"]["x-real-ip"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http" and seen["headers"]["x-request-id"]
    assert headers["x-proxy-id"] == "test-proxy" and headers["x-server-info"] == "ingressmesh"
    assert headers["x-upstream-addr"].startswith("127.0.0.") and headers["x-upstream-response-time"].isdigit()
    ids = {get(proxy, "a.com")[1]["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_task_churn_and_health_use_the_runtime_api_without_a_reload(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com")
    a1, a2 = swarm.task("a1", "a"), swarm.task("a2", "a")
    proxy.apply(swarm.table())
    before = master(proxy)
    a3 = swarm.task("a3", "a")
    assert proxy.apply(swarm.table()).how == "runtime"
    assert hits(proxy, "a.com") == {a1, a2, a3}
    swarm.set(a2, health="unhealthy", since=NOW - 1)  # drains: no new requests
    assert proxy.apply(swarm.table()).how == "runtime"
    assert hits(proxy, "a.com") == {a1, a3}
    swarm.set(a1, current_state="shutdown", desired_state="shutdown")  # gone
    assert proxy.apply(swarm.table()).how == "runtime"
    assert hits(proxy, "a.com") == {a3}
    assert master(proxy) == before  # same master, no reload, no failure
    assert proxy.apply(swarm.table()).how == "unchanged"


def test_route_changes_reload_seamlessly_and_keep_the_slots(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com")
    a1 = swarm.task("a1", "a")
    proxy.apply(swarm.table())
    pid, reloads, _ = master(proxy)
    swarm.service("b", hosts="b.com")
    b1 = swarm.task("b1", "b")
    assert proxy.apply(swarm.table()).how == "reload"
    assert master(proxy) == (pid, reloads + 1, 0)
    assert hits(proxy, "b.com") == {b1} and hits(proxy, "a.com") == {a1}
    swarm.service("a", hosts="a.com", context_root="/api", context_root_rewrite="true")
    swarm.service("b", hosts="b.com", redirects="http://b.com,https://new.b.com:8443")
    assert proxy.apply(swarm.table()).how == "reload"
    status, _, body = get(proxy, "a.com", "/api/x")
    assert status == 200 and json.loads(body)["path"] == "/x"
    assert json.loads(get(proxy, "a.com", "/api")[2])["path"] == "/"
    assert get(proxy, "a.com", "/apix")[0] == 404  # a context root is a path prefix, not a string prefix
    status, headers, _ = get(proxy, "b.com", "/p?q=1")
    assert status == 302 and headers["location"] == "https://new.b.com:8443/p?q=1"


def test_a_config_haproxy_refuses_is_never_loaded(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com")
    a1 = swarm.task("a1", "a")
    proxy.apply(swarm.table())
    before = master(proxy)
    proxy.render = lambda *args: render_config(*args) + "\nbackend broken\n    frobnicate yes\n"
    swarm.service("b", hosts="b.com")
    swarm.task("b1", "b")
    result = proxy.apply(swarm.table())
    assert result.how == "refused" and "frobnicate" in result.error
    assert proxy.last_error and proxy.refused_configs == 1
    assert hits(proxy, "a.com") == {a1} and get(proxy, "b.com")[0] == 404
    assert master(proxy) == before
    proxy.render = render_config
    assert proxy.apply(swarm.table()).how == "reload" and proxy.last_error is None


def test_a_crashed_haproxy_comes_back_with_the_runtime_changes_too(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com")
    a1, a2 = swarm.task("a1", "a"), swarm.task("a2", "a")
    proxy.apply(swarm.table())
    swarm.set(a2, current_state="shutdown", desired_state="shutdown")
    assert proxy.apply(swarm.table()).how == "runtime"  # a2 left at runtime, not in the last config
    os.kill(proxy.haproxy.master_pid, signal.SIGKILL)
    proxy.haproxy.process.wait(5)
    assert proxy.haproxy.died
    assert proxy.reinstall().how == "start"
    assert hits(proxy, "a.com") == {a1}


def test_a_refused_config_still_lets_health_changes_through_elsewhere(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com")
    a1, a2 = swarm.task("a1", "a"), swarm.task("a2", "a")
    proxy.apply(swarm.table())
    proxy.render = lambda *args: render_config(*args) + "\nbackend broken\n    frobnicate yes\n"
    swarm.service("b", hosts="b.com")
    swarm.task("b1", "b")
    swarm.set(a2, health="unhealthy", since=NOW - 1)
    result = proxy.apply(swarm.table())
    assert result.how == "refused" and result.commands > 0
    assert hits(proxy, "a.com") == {a1}  # a2 drained although the new route could not load


def test_live_state_shows_each_slot_as_haproxy_serves_it(proxy, backends):
    from ingressmesh.l7.state import state_document, with_live_state
    swarm = Swarm(backends).service("a", hosts="a.com")
    swarm.task("a1", "a")
    proxy.apply(swarm.table())
    swarm.task("a2", "a")  # added at runtime into a slot that was disabled in the config
    swarm.task("a3", "a")
    swarm.set("a3", health="unhealthy", since=NOW - 1)
    assert proxy.apply(swarm.table()).how == "runtime"
    document = with_live_state(state_document(proxy, 7, ""))
    slots = {s["task_id"]: s for s in document["backends"]["be:a"]["slots"]}
    assert {t: s["serving"] for t, s in slots.items()} == {"a1": "active", "a2": "active", "a3": "draining"}
    assert document["routes"] == [{"host": "a.com", "path": "/", "backend": "be:a"}]


def test_a_new_host_for_an_existing_backend_is_a_map_edit_not_a_reload(proxy, backends):
    swarm = Swarm(backends).service("a", hosts="a.com").service("b", hosts="b.com")
    a1, b1 = swarm.task("a1", "a"), swarm.task("b1", "b")
    proxy.apply(swarm.table())
    before = master(proxy)
    swarm.service("a", hosts="a.com,www.a.com", port=str(swarm.ports["a"]))
    assert proxy.apply(swarm.table()).how == "runtime"
    assert hits(proxy, "www.a.com") == {a1}
    swarm.service("b", hosts="b.com,www.a.com", port=str(swarm.ports["b"]))  # a canary host: a new backend
    assert proxy.apply(swarm.table()).how == "reload"
    assert hits(proxy, "www.a.com") == {a1, b1}
    swarm.service("a", hosts="a.com", port=str(swarm.ports["a"]))  # the canary backend goes
    assert proxy.apply(swarm.table()).how == "reload"
    swarm.service("b", hosts="b.com", port=str(swarm.ports["b"]))  # back to a backend that exists
    assert proxy.apply(swarm.table()).how == "runtime"
    after = master(proxy)
    swarm.service("b", hosts="b.com,shop.b.com", port=str(swarm.ports["b"]))
    assert proxy.apply(swarm.table()).how == "runtime"
    assert hits(proxy, "shop.b.com") == {b1} and get(proxy, "www.a.com")[0] == 404
    assert master(proxy) == after and after[0] == before[0]
    with open(proxy.haproxy.files.map_file(proxy.generation)) as handle:  # what a reload would load
        assert "shop.b.com/ be:b\n" in handle.read()
