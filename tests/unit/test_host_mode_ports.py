"""A host-mode port with no published number (`--publish mode=host,target=8080`): Docker picks
one per task, the service's VIP and L7 routes are unaffected (issue 20, point 2)."""
import pytest

from ingressmesh import snapshot
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.swarm import convert

from l7_swarm import NOW, cluster, service, task
from small_swarm import _BASE, API_VIP


def _docker_service(ports):
    """A service as the Docker API answers for `docker service create --publish mode=host,target=8080`."""
    return {"ID": "hostsvc", "CreatedAt": "2026-12-06T01:00:00.123456789Z",
            "Spec": {"Name": "hostsvc", "Labels": {"com.docker.lb.hosts": "h.example", "com.docker.lb.port": "8080"},
                     "EndpointSpec": {"Mode": "vip", "Ports": ports}},
            "Endpoint": {"Spec": {"Mode": "vip", "Ports": ports}, "Ports": ports,
                         "VirtualIPs": [{"NetworkID": "appnet", "Addr": "10.0.1.50/24"}]}}


def test_a_host_mode_port_without_a_published_number_is_accepted_with_its_vip():
    converted = convert.convert_service(_docker_service([{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]))
    assert [(p.published_port, p.target_port, p.publish_mode) for p in converted.ports] == [(0, 8080, "host")]
    assert converted.vip_on("appnet") == "10.0.1.50"


def test_an_ingress_port_without_a_published_number_is_still_refused_by_name():
    with pytest.raises(snapshot.SnapshotError, match=r"service 'hostsvc': ports\[0\].published_port: 0 is not a port"):
        convert.convert_service(_docker_service([{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "ingress"}]))


def test_the_snapshot_round_trips_it_and_refuses_a_bad_host_port():
    data = {**_BASE, "tasks": []}
    data["services"] = [dict(s) for s in _BASE["services"]]
    data["services"][1]["ports"] = [{"protocol": "tcp", "published_port": 0, "target_port": 70, "publish_mode": "host"}]
    loaded = snapshot.from_dict(data)
    assert snapshot.from_dict(snapshot.to_dict(loaded)) == loaded
    data["services"][1]["ports"][0]["published_port"] = 70000
    with pytest.raises(snapshot.SnapshotError, match=r"services\[1\].ports\[0\].published_port: 70000"):
        snapshot.from_dict(data)


def test_the_vip_is_planned_and_no_mesh_port_is_opened_for_it():
    data = {**_BASE, "services": [dict(s) for s in _BASE["services"]]}
    data["services"][1]["ports"] = [{"protocol": "tcp", "published_port": 0, "target_port": 70, "publish_mode": "host"}]
    data["tasks"] = [{"id": "a1", "service_id": "api", "node_id": "n2",
                      "addresses": [{"network_id": "appnet", "address": "10.0.1.40"}]}]
    plans = plan_node(snapshot.from_dict(data), "n1", PlanOptions(now=NOW))
    lb = plans.namespace("lb:appnet")
    vip = next(v for v in lb.vips if v.vip == API_VIP)
    assert [b.address for b in vip.backends] == ["10.0.1.40"]
    ingress = plans.namespace("ingress")
    assert all(p.service != "api" for p in ingress.ports)


def test_its_l7_route_is_planned():
    svc = service("hostsvc", {"hosts": "h.example", "port": "8080"}, vip="50")
    svc["ports"] = [{"protocol": "tcp", "published_port": 0, "target_port": 8080, "publish_mode": "host"}]
    table = plan_routes(cluster([svc], [task("h1", "hostsvc", 7)]), options=PlanOptions(now=NOW, drain_grace=10.0))
    route = next(r for r in table.routes if r.host == "h.example")
    assert [(s.address, s.port) for s in table.backend(route.backend).servers] == [("10.0.1.7", 8080)]
    assert not table.refused
