"""`l7 deploy --watch --listen`: a stuck, paused or rolled-back proxy service update is named on
its /healthz (503), asked over a real loopback socket; a finished one clears it (issue 20, point 1).
A labelled service on its stack's own network is named there too when a RoutingNetwork keeps the
proxies off it (point 8)."""
import json
import time
import urllib.error
import urllib.request

from ingressmesh import snapshot
from ingressmesh.daemon.http import HttpService
from ingressmesh.l7.deploy_health import DeployHealth
from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import ProxyServices
from ingressmesh.l7.settings import ProxyServiceSettings

from l7_swarm import NETWORKS, NODES, cluster
from test_l7_secret_policy import RecordingDocker

PENDING = {"DesiredState": "running", "Status": {"State": "pending", "Timestamp": "2026-12-06T00:59:00Z",
                                                 "Err": "no suitable node (host-mode port already in use on 3 nodes)"}}


class UpdatingDocker(RecordingDocker):
    """The proxy service as a manager shows it mid-update: UpdateStatus and its tasks."""

    def __init__(self):
        super().__init__({})
        self.task_list = []

    def tasks(self, filters=None):
        return list(self.task_list)

    def nodes(self):
        return []  # unknown: host-mode proxies roll stop-first

    def set_update(self, state: str, message: str = ""):
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))  # a minute ago
        self.service_list[0]["UpdateStatus"] = {"State": state, "StartedAt": started, "Message": message}


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_healthz_names_a_stuck_or_paused_proxy_update_and_clears_it():
    item = ProxyServiceSettings(name="ingressmesh-proxy-pinned", publish_mode="host", replicas=3)
    api = UpdatingDocker()
    services = ProxyServices(api, "reader-token")
    health = DeployHealth()
    http = HttpService(("127.0.0.1", 0), {("GET", "/healthz"): health.healthz}, None).start()
    try:
        url = http.url + "/healthz"
        status, body = get(url)
        assert status == 503 and body["seconds_since_last_pass"] is None  # no pass yet
        health.passed(deploy_once(services, (item,), cluster([], []), ("http://c:9401",)))
        status, body = get(url)
        assert status == 200 and body["stuck"] == [] and body["ok"]
        assert body["proxy_services"][item.name] == {"outcome": "created", "update_order": "stop-first",
                                                     "stuck": None, "mounted_secrets": []}
        api.set_update("updating")  # a minute ago, with a new task Swarm cannot place
        api.task_list = [PENDING]
        health.passed(deploy_once(services, (item,), cluster([], []), ("http://c:9401",)))
        status, body = get(url)
        (stuck,) = body["stuck"]
        assert status == 503 and stuck == body["proxy_services"][item.name]["stuck"]
        assert stuck.startswith(f"proxy service {item.name}: update stuck: a new task cannot be scheduled")
        assert "host-mode port already in use" in stuck
        api.set_update("rollback_paused", "update rolled back due to failure")
        health.passed(deploy_once(services, (item,), cluster([], []), ("http://c:9401",)))
        status, body = get(url)
        assert status == 503 and body["stuck"] == [f"proxy service {item.name}: update rollback paused: "
                                                   "update rolled back due to failure"]
        health.failed("controller unreachable")  # the last known services stay, the error is said
        status, body = get(url)
        assert status == 503 and body["last_error"] == "controller unreachable" and len(body["stuck"]) == 1
        api.set_update("completed")
        health.passed(deploy_once(services, (item,), cluster([], []), ("http://c:9401",)))
        status, body = get(url)
        assert status == 200 and body["stuck"] == [] and body["last_error"] is None
    finally:
        http.stop()


def test_a_stack_network_kept_off_by_the_routing_network_is_named_and_not_joined():
    item = ProxyServiceSettings(routing_network="ingressmesh-routing")
    networks = NETWORKS + [{"id": "routingnet", "name": "ingressmesh-routing", "subnet": "10.0.9.0/24"},
                           {"id": "demonet", "name": "demo_demo-network", "subnet": "10.0.8.0/24"}]
    web = {"id": "web", "name": "demo_web", "vips": [{"network_id": "demonet", "address": "10.0.8.2"}],
           "labels": {"com.docker.stack.namespace": "demo", "com.docker.lb.hosts": "demo.local",
                      "com.docker.lb.port": "80", "com.docker.lb.network": "demo-network"}}
    joined = {"id": "j", "name": "demo_joined", "vips": [{"network_id": "routingnet", "address": "10.0.9.3"}],
              "labels": {"com.docker.stack.namespace": "demo", "com.docker.lb.hosts": "j.local",
                         "com.docker.lb.port": "80", "com.docker.lb.network": "ingressmesh-routing"}}
    plain = {"id": "p", "name": "plain", "vips": [{"network_id": "othernet", "address": "10.0.2.4"}],
             "labels": {"com.docker.lb.hosts": "p.local", "com.docker.lb.port": "80"}}
    state = snapshot.from_dict({"nodes": NODES, "networks": networks, "services": [web, joined, plain], "tasks": []})
    api = RecordingDocker({})
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (item,), state, ("http://c:9401",))
    (spec,) = [spec for kind, spec in api.calls if kind == "create_service"]
    assert sorted(n["Target"] for n in spec["task_template"]["Networks"]) == ["othernet", "routingnet"]  # not demonet
    (line,) = done.kept_off
    assert line.startswith("service demo_web: not routed: network demo_demo-network is stack demo's own") and \
        "put the service on ingressmesh-routing" in line
    health = DeployHealth()
    health.passed([done], done.kept_off)
    status, body = health.answer()
    assert status == 200 and body["notes"] == [line]  # named, but no proxy update is stuck
    # Without a RoutingNetwork the proxies join the stack's network, as Interlock's do.
    api = RecordingDocker({})
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (ProxyServiceSettings(),), state, ("http://c:9401",))
    (spec,) = [spec for kind, spec in api.calls if kind == "create_service"]
    assert "demonet" in [n["Target"] for n in spec["task_template"]["Networks"]] and done.kept_off == ()

