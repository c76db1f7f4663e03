"""RoutingNetwork: an overlay the proxies are always attached to, so stacks whose labelled services
join it never leave the proxies on a network of theirs (issue 20, points 8 and 10)."""
import pytest

from ingressmesh import snapshot
from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import ProxyServices, desired_spec
from ingressmesh.l7.settings import ProxyServiceSettings, SettingsError, parse

from l7_swarm import NETWORKS, NODES, service, task
from test_l7_secret_policy import RecordingDocker

ROUTING_NET = {"id": "routingnet", "name": "ingressmesh-routing", "subnet": "10.0.9.0/24"}


def _cluster(services, tasks, with_routing=True):
    networks = NETWORKS + ([ROUTING_NET] if with_routing else [])
    return snapshot.from_dict({"nodes": NODES, "networks": networks, "services": services, "tasks": tasks})


def networks_of(spec) -> list[str]:
    return [n["Target"] for n in spec["TaskTemplate"]["Networks"]]


def test_the_routing_network_is_attached_ahead_of_need_and_once():
    item = ProxyServiceSettings(routing_network="ingressmesh-routing")
    empty = desired_spec(item, _cluster([], []), ("tid", "tok"), ("http://c:9401",))
    assert networks_of(empty) == ["routingnet"]
    on_routing = service("app", {"hosts": "a.com", "port": "80", "network": "ingressmesh-routing"},
                         vip="5", networks=("appnet",))
    on_routing["vips"].append({"network_id": "routingnet", "address": "10.0.9.5"})
    both = desired_spec(item, _cluster([on_routing], [task("t1", "app", 7)]), ("tid", "tok"), ("http://c:9401",))
    assert networks_of(both) == ["routingnet"]  # the label names it: the stack's own network stays out
    other = service("b", {"hosts": "b.com", "port": "80"}, vip="6")
    spec = desired_spec(item, _cluster([on_routing, other], [task("t1", "app", 7), task("t2", "b", 8)]), ("tid", "tok"),
                        ("http://c:9401",))
    assert sorted(networks_of(spec)) == ["appnet", "routingnet"]
    without = desired_spec(ProxyServiceSettings(), _cluster([], []), ("tid", "tok"), ("http://c:9401",))
    assert networks_of(without) == []


def test_a_missing_routing_network_is_named_and_the_rest_deployed():
    item = ProxyServiceSettings(routing_network="ingressmesh-routing")
    api = RecordingDocker({})
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (item,), _cluster([], [], with_routing=False),
                          ("http://c:9401",))
    assert done.outcome == "created" and "RoutingNetwork 'ingressmesh-routing' is not an overlay network" in done.problem
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (item,), _cluster([], []), ("http://c:9401",))
    assert done.outcome == "updated" and done.problem is None


def test_the_setting_is_a_docker_name():
    (item,) = parse('[Extensions.default]\nRoutingNetwork = "ingressmesh-routing"\n')
    assert item.routing_network == "ingressmesh-routing"
    with pytest.raises(SettingsError, match="Extensions.default.RoutingNetwork"):
        parse('[Extensions.default]\nRoutingNetwork = "bad name"\n')
