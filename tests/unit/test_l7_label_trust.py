"""Labels must not reach other services: a redirect on someone else's host (issue 19.4), a
network the service is not on (19.6), and the stack-prefixed network of `docker stack deploy` (20.4)."""
from ingressmesh import snapshot
from ingressmesh.l7.proxy_service import networks_needed
from ingressmesh.l7.routes import plan_routes
from ingressmesh.l7.settings import ProxyServiceSettings
from ingressmesh.plan import PlanOptions

from l7_swarm import NODES, NOW, NETWORKS, cluster, service, task

OPTIONS = PlanOptions(now=NOW, drain_grace=10.0)
BANK_TLS = {"ssl_cert": "bank.cert", "ssl_key": "bank.key"}


def plan(services, tasks):
    return plan_routes(cluster(services, tasks), options=OPTIONS)


def reasons(table, name):
    return [r.reason for r in table.refused if r.service == name]


def test_a_redirect_for_a_host_the_service_was_refused_is_refused_by_name():
    """The issue's zzz: refused for bank.example.com (its TLS differs), kept for zzz.example.com;
    its redirect for the bank host must not reach any frontend."""
    table = plan([service("bank", {"hosts": "bank.example.com", "port": "80", **BANK_TLS}),
                  service("zzz", {"hosts": "bank.example.com,zzz.example.com", "port": "80",
                                  "redirects": "https://bank.example.com,https://evil.example.net"})],
                 [task("b1", "bank", 2), task("z1", "zzz", 3)])
    assert {r.host for r in table.routes} == {"bank.example.com", "zzz.example.com"}
    assert table.redirects == ()
    assert any("redirect bank.example.com -> https://evil.example.net" in r and "bank keeps it" in r
               for r in reasons(table, "zzz"))


def test_a_service_sharing_a_host_cannot_redirect_it_unless_the_owner_does_the_same():
    services = [service("app", {"hosts": "shop.com", "port": "80"}),
                service("canary", {"hosts": "shop.com", "port": "80",
                                   "redirects": "http://shop.com,https://evil.example.net"})]
    tasks = [task("a1", "app", 2), task("c1", "canary", 3)]
    table = plan(services, tasks)
    assert table.redirects == ()  # the redirect is the host's behaviour: the canary is refused for the host
    assert [s.service for b in table.backends for s in b.servers] == ["app"]
    assert any("host shop.com: redirects=http://shop.com,https://evil.example.net differs from "
               "redirects=(none)" in r and "app keeps the host" in r for r in reasons(table, "canary"))
    services[0]["labels"]["com.docker.lb.redirects"] = "http://shop.com,https://evil.example.net"
    table = plan(services, tasks)  # both ask the same: the owner's redirect, nobody refused
    assert [(r.source_host, r.target, r.service) for r in table.redirects] == [
        ("shop.com", "https://evil.example.net", "app")] and table.refused == ()


def test_the_owner_keeps_its_own_redirect():
    table = plan([service("old", {"hosts": "old.com,new.com", "port": "80",
                                  "redirects": "http://old.com,https://new.com"})], [task("o1", "old", 2)])
    assert [(r.source_host, r.target) for r in table.redirects] == [("old.com", "https://new.com")]


def test_a_network_the_service_is_not_on_is_refused_and_never_attached():
    services = [service("a", {"hosts": "a.com", "port": "80", "network": "other"}, vip="9"),  # on app only
                service("b", {"hosts": "b.com", "port": "80"}, vip="10")]
    tasks = [task("a1", "a", 2), task("b1", "b", 3)]
    table = plan(services, tasks)
    assert {r.host for r in table.routes} == {"b.com"}
    assert reasons(table, "a") == ["label com.docker.lb.network='other': the service has no VIP or task "
                                   "address on network other: the proxies only join networks of the "
                                   "services they route to"]
    assert [n.name for n in networks_needed(cluster(services, tasks), ProxyServiceSettings())] == ["app"]
    # On it through a task address only (no VIP: endpoint mode dnsrr): accepted.
    services[0] = service("a", {"hosts": "a.com", "port": "80", "network": "other"})
    table = plan(services, tasks + [task("a2", "a", 4, network="othernet")])
    assert {r.host for r in table.routes} == {"a.com", "b.com"} and table.refused == ()


def stack_cluster(extra_networks=()):
    svc = service("demo_app", {"hosts": "demo.local", "port": "8080", "network": "demo-network"})
    svc["labels"]["com.docker.stack.namespace"] = "demo"
    svc["vips"] = [{"network_id": "demonet", "address": "10.0.3.9"}]
    networks = NETWORKS + [{"id": "demonet", "name": "demo_demo-network", "subnet": "10.0.3.0/24"},
                           *extra_networks]
    tasks = [{"id": "t1", "service_id": "demo_app", "node_id": "n1", "since": NOW - 100,
              "addresses": [{"network_id": "demonet", "address": "10.0.3.2"}]}]
    return snapshot.from_dict({"nodes": NODES, "networks": networks, "services": [svc], "tasks": tasks})


def test_under_stack_deploy_the_unprefixed_network_is_the_stacks_own_and_that_is_said():
    table = plan_routes(stack_cluster(), options=OPTIONS)
    assert table.refused == ()
    assert [s.address for b in table.backends for s in b.servers] == ["10.0.3.2"]
    assert ("service demo_app: com.docker.lb.network=demo-network is the stack's network demo_demo-network "
            "(no network is named demo-network)") in table.notes
    assert [n.name for n in networks_needed(stack_cluster(), ProxyServiceSettings())] == ["demo_demo-network"]


def test_a_network_with_the_exact_name_wins_over_the_stack_prefix():
    """An existing `demo-network` (the service is not on it) is the one named: refused, not guessed."""
    table = plan_routes(stack_cluster([{"id": "plain", "name": "demo-network", "subnet": "10.0.4.0/24"}]),
                        options=OPTIONS)
    assert "no VIP or task address on network demo-network" in table.refused[0].reason


def test_another_stacks_prefixed_network_is_not_taken():
    svc = service("x", {"hosts": "x.com", "port": "80", "network": "demo-network"})
    svc["labels"]["com.docker.stack.namespace"] = "other"
    got = snapshot.from_dict({"nodes": NODES, "networks": NETWORKS + [
        {"id": "demonet", "name": "demo_demo-network", "subnet": "10.0.3.0/24"}], "services": [svc], "tasks": []})
    assert "no such overlay network" in plan_routes(got, options=OPTIONS).refused[0].reason


def test_show_l7_prints_the_proxies_notes(capsys):
    """`show --l7` / `l7 state` print a proxy's notes (the stack network it chose, among others)."""
    from ingressmesh.cli.l7 import _print_rows
    table = plan_routes(stack_cluster(), options=OPTIONS)
    _print_rows({"proxy on node1": {"snapshot_version": 3, "config_generation": 1, "reloads": 0, "routes": [],
                                    "backends": {}, "refused": [], "notes": list(table.notes)}})
    out = " ".join(capsys.readouterr().out.split())
    assert "note service demo_app: com.docker.lb.network=demo-network is the stack's network demo_demo-network" in out
