"""Who owns an L7 host: the service created first (Docker's CreatedAt), never the first by name,
so a newcomer cannot take a host's TLS or redirects from the incumbent (review of issue 19)."""
from ingressmesh import snapshot
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions
from ingressmesh.swarm.convert import convert_service

from l7_swarm import NOW, cluster, service, task

OPTIONS = PlanOptions(now=NOW, drain_grace=10.0)
BANK = {"hosts": "bank.example.com", "port": "80", "ssl_cert": "bank.cert", "ssl_key": "bank.key",
        "ssl_only": "true"}
EVIL = "http://bank.example.com,https://evil.net"


def created(svc: dict, when: float) -> dict:
    return {**svc, "created": when}


def reasons(table, name):
    return [r.reason for r in table.refused if r.service == name]


def plan(services, tasks):
    return plan_routes(cluster(services, tasks), options=OPTIONS)


def test_a_newcomer_named_first_cannot_take_the_host_of_the_incumbent():
    tasks = [task("b1", "bank", 2), task("e1", "0evil", 3)]
    table = plan([created(service("bank", BANK), NOW - 1000),
                  created(service("0evil", {"hosts": "bank.example.com", "port": "80", "redirects": EVIL}), NOW - 5)],
                 tasks)
    assert reasons(table, "bank") == []
    assert table.redirects == ()
    assert [(t.host, t.services, t.cert, t.only) for t in table.tls_hosts] == [
        ("bank.example.com", ("bank",), "bank.cert", True)]
    assert [s.service for b in table.backends for s in b.servers] == ["bank"]
    assert any(r.startswith("host bank.example.com: ssl_cert=(none)") and "bank keeps the host" in r
               for r in reasons(table, "0evil"))


def test_copying_the_incumbents_tls_labels_does_not_carry_a_redirect_through():
    tasks = [task("b1", "bank", 2), task("e1", "0evil", 3)]
    table = plan([created(service("bank", BANK), NOW - 1000),
                  created(service("0evil", {**BANK, "redirects": EVIL}), NOW - 5)], tasks)
    assert table.redirects == () and reasons(table, "bank") == []
    assert [s.service for b in table.backends for s in b.servers] == ["bank"]
    assert any("redirects=http://bank.example.com,https://evil.net differs from redirects=(none)" in r
               and "bank keeps the host" in r for r in reasons(table, "0evil"))


def test_the_incumbent_keeps_its_route_behaviour_too():
    table = plan([created(service("web", {"hosts": "a.com", "port": "80"}), 100.0),
                  created(service("0new", {"hosts": "a.com", "port": "80", "ip_hash": "true"}), 200.0)],
                 [task("w1", "web", 2), task("n1", "0new", 3)])
    assert [s.service for b in table.backends for s in b.servers] == ["web"]
    assert any("web keeps the route" in r for r in reasons(table, "0new"))


def test_without_creation_times_ties_go_by_name_and_old_snapshots_load():
    old = snapshot.from_dict({"nodes": [], "networks": [], "services": [{"id": "s", "name": "s"}], "tasks": []})
    assert old.services[0].created == 0.0
    table = plan([service("b", {"hosts": "a.com", "port": "80"}),
                  service("a", {"hosts": "a.com", "port": "80", "ip_hash": "true"})],
                 [task("b1", "b", 2), task("a1", "a", 3)])
    assert any("a keeps the route" in r for r in reasons(table, "b"))


def test_docker_created_at_reaches_the_model_and_the_snapshot():
    svc = convert_service({"ID": "x", "CreatedAt": "2026-12-05T10:00:00.123456789Z",
                           "Spec": {"Name": "web", "Labels": {}}})
    assert svc.created == 1796464800.123456
    again = snapshot.loads(snapshot.dumps(snapshot.from_dict({"services": [snapshot.plain_form(svc)]})))
    assert again.services[0].created == svc.created
