"""The pure L7 planner: hosts, context roots, canary shares, health, conflicts, scope."""
from ingressmesh.l7.routes import DEFAULT_HOST, ProxyScope, next_change, plan_routes
from ingressmesh.plan import ACTIVE, DRAINING, PlanOptions

from l7_swarm import NOW, cluster, service, task

OPTIONS = PlanOptions(now=NOW, drain_grace=10.0)


def plan(services, tasks, scope=ProxyScope()):
    return plan_routes(cluster(services, tasks), scope, OPTIONS)


def servers(table, host, path="/"):
    route = next(r for r in table.routes if (r.host, r.path) == (host, path))
    return [(s.service, s.address, s.port, s.state) for s in table.backend(route.backend).servers]


def test_two_hosts_reach_only_their_own_service():
    table = plan([service("a", {"hosts": "a.com", "port": "80"}), service("b", {"hosts": "B.com", "port": "8080"})],
                 [task("a1", "a", 2), task("a2", "a", 3, node="n2"), task("b1", "b", 4)])
    assert servers(table, "a.com") == [("a", "10.0.1.2", 80, ACTIVE), ("a", "10.0.1.3", 80, ACTIVE)]
    assert servers(table, "b.com") == [("b", "10.0.1.4", 8080, ACTIVE)]
    assert table.default_backend is None and not table.refused


def test_only_eligible_tasks_are_servers_and_stopping_ones_drain():
    services = [service("a", {"hosts": "a.com", "port": "80"})]
    tasks = [task("ok", "a", 2, health="healthy"), task("sick", "a", 3, health="unhealthy", since=NOW - 1),
             task("new", "a", 4, health="starting"), task("gone", "a", 5, desired_state="shutdown", since=NOW - 20),
             task("stopping", "a", 6, desired_state="shutdown", since=NOW - 2)]
    table = plan(services, tasks)
    assert servers(table, "a.com") == [("a", "10.0.1.2", 80, ACTIVE), ("a", "10.0.1.3", 80, DRAINING),
                                       ("a", "10.0.1.6", 80, DRAINING)]
    assert next_change(cluster(services, tasks), table, OPTIONS) == NOW + 8  # "stopping"'s grace ends first


def test_canary_services_share_one_backend_in_proportion_to_replicas():
    table = plan([service("v1", {"hosts": "app.com", "port": "80"}), service("v2", {"hosts": "app.com", "port": "81"})],
                 [task(f"v1-{i}", "v1", 10 + i) for i in range(4)] + [task("v2-0", "v2", 20)])
    shares = [s[0] for s in servers(table, "app.com")]
    assert shares.count("v1") == 4 and shares.count("v2") == 1
    assert len(table.backends) == 1 and table.backends[0].services == ("v1", "v2")


def test_context_roots_longest_first_with_rewrite():
    table = plan([service("root", {"hosts": "a.com", "port": "80"}),
                  service("api", {"hosts": "a.com", "port": "80", "context_root": "/api", "context_root_rewrite": "true"}),
                  service("v2", {"hosts": "a.com", "port": "80", "context_root": "/api/v2"})],
                 [task("r", "root", 2), task("p", "api", 3), task("q", "v2", 4)])
    assert [(r.host, r.path) for r in table.routes] == [("a.com", "/api/v2"), ("a.com", "/api"), ("a.com", "/")]
    api = table.backend(next(r.backend for r in table.routes if r.path == "/api"))
    assert api.strip_prefix == "/api"
    assert table.backend(next(r.backend for r in table.routes if r.path == "/api/v2")).strip_prefix == ""


def test_conflicting_claims_first_by_name_keeps_the_route_and_the_other_is_named():
    table = plan([service("alpha", {"hosts": "a.com", "port": "80", "context_root": "/x"}),
                  service("beta", {"hosts": "a.com", "port": "80", "context_root": "/x", "context_root_rewrite": "true"})],
                 [task("a", "alpha", 2), task("b", "beta", 3)])
    assert servers(table, "a.com", "/x") == [("alpha", "10.0.1.2", 80, ACTIVE)]
    assert [r.service for r in table.refused] == ["beta"]
    assert "alpha keeps the route" in table.refused[0].reason


def test_default_backend_serves_unclaimed_hosts():
    table = plan([service("fallback", {"port": "80", "default_backend": "true"}), service("a", {"hosts": "a.com", "port": "80"})],
                 [task("f", "fallback", 2), task("a", "a", 3)])
    assert table.default_backend is not None
    assert servers(table, DEFAULT_HOST) == [("fallback", "10.0.1.2", 80, ACTIVE)]


def test_backend_mode_vip_is_one_server_at_the_vip():
    table = plan([service("a", {"hosts": "a.com", "port": "80", "backend_mode": "vip"}, vip="100")],
                 [task("a1", "a", 2), task("a2", "a", 3)])
    assert servers(table, "a.com") == [("a", "10.0.1.100", 80, ACTIVE)]


def test_a_bad_service_is_refused_by_name_and_the_others_keep_working():
    table = plan([service("good", {"hosts": "good.com", "port": "80"}),
                  service("evil", {"hosts": "a.com;x", "port": "80"}),
                  service("long", {"hosts": "b.com", "port": "80", "context_root": "/" + "a" * 5000})],
                 [task("g", "good", 2), task("e", "evil", 3), task("l", "long", 4)])
    assert [r.host for r in table.routes] == ["good.com"]
    assert {r.service for r in table.refused} == {"evil", "long"}
    assert "com.docker.lb.hosts" in next(r.reason for r in table.refused if r.service == "evil")


def test_network_is_needed_when_a_service_is_on_several():
    svc = service("a", {"hosts": "a.com", "port": "80"}, vip="9", networks=("appnet", "othernet"))
    table = plan([svc], [task("a1", "a", 2)])
    assert "set com.docker.lb.network" in table.refused[0].reason
    svc["labels"]["com.docker.lb.network"] = "other"
    table = plan([svc], [task("a1", "a", 2, network="othernet")])
    assert servers(table, "a.com") == [("a", "10.0.2.2", 80, ACTIVE)]


def test_service_clusters_and_proxy_networks_scope_what_a_proxy_serves():
    services = [service("a", {"hosts": "a.com", "port": "80"}),
                service("b", {"hosts": "b.com", "port": "80", "service_cluster": "blue"}),
                service("c", {"hosts": "c.com", "port": "80", "network": "other"})]
    tasks = [task("a1", "a", 2), task("b1", "b", 3), task("c1", "c", 4, network="othernet")]
    assert {r.host for r in plan(services, tasks).routes} == {"a.com", "c.com"}
    assert {r.host for r in plan(services, tasks, ProxyScope(service_cluster="blue")).routes} == {"b.com"}
    waiting = plan(services, tasks, ProxyScope(networks=frozenset({"appnet"})))
    assert {r.host for r in waiting.routes} == {"a.com"}
    assert any("waiting for the proxy to join network other" in n for n in waiting.notes)


def test_the_plan_is_deterministic():
    services = [service("b", {"hosts": "b.com,a.com", "port": "80"}), service("a", {"hosts": "a.com", "port": "80"})]
    tasks = [task("x", "b", 5), task("y", "a", 2)]
    assert plan(services, tasks) == plan(list(reversed(services)), list(reversed(tasks)))


def test_service_names_never_collide_into_another_backend():
    table = plan([service("a", {"hosts": "shop.com", "port": "80"}), service("b", {"hosts": "shop.com", "port": "80"}),
                  service("a__b", {"hosts": "other.com", "port": "80"}), service("no_route", {"hosts": "x.com", "port": "80"}),
                  service("c", {"hosts": "c.com", "port": "80", "backend_mode": "vip"}, vip="50"),
                  service("c_vip", {"hosts": "d.com", "port": "80"})],
                 [task("t1", "a", 2), task("t2", "b", 3), task("t3", "a__b", 4), task("t4", "no_route", 5),
                  task("t5", "c", 6), task("t6", "c_vip", 7)])
    assert [s[0] for s in servers(table, "shop.com")] == ["a", "b"]
    assert [s[0] for s in servers(table, "other.com")] == ["a__b"]
    names = [b.name for b in table.backends]
    assert len(names) == len(set(names)) and all(n.startswith("be:") for n in names)


def test_a_service_refused_for_its_route_gets_no_redirect_either():
    table = plan([service("alpha", {"hosts": "shop.com", "port": "80", "context_root": "/x"}),
                  service("beta", {"hosts": "shop.com", "port": "80", "context_root": "/x", "backend_mode": "vip",
                                   "redirects": "http://shop.com,http://evil.example"}, vip="9")],
                 [task("a", "alpha", 2), task("b", "beta", 3)])
    assert {r.service for r in table.refused} == {"beta"} and table.redirects == ()
    assert any("redirect shop.com -> http://evil.example" in r.reason for r in table.refused)
