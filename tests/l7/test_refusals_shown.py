"""Every refusal reaches the proxies' /healthz, /metrics and state (`show --l7`): the controller's
(the snapshot's `refused`: such a service has no VIP and no route) and the proxy's own (labels).
A service whose only port is host mode with no published number is served (issue 20, point 2)."""
from __future__ import annotations

import http.client
import json

from l7_backends import free_port
from test_proxy_process import controller, proxy, cluster  # noqa: F401 - the fixtures, shared

REFUSAL = "service 'absurd': ports[0].published_port: 70000 is not a port (1-65535)"


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_controller_and_label_refusals_are_named_and_a_host_mode_service_is_served(proxy, controller, backends):
    port = free_port()
    data = cluster({"hostmode": "h.test", "bad": "b.test"}, backends, port)
    hostmode = next(s for s in data["services"] if s["name"] == "hostmode")
    hostmode["ports"] = [{"protocol": "tcp", "published_port": 0, "target_port": port, "publish_mode": "host"}]
    bad = next(s for s in data["services"] if s["name"] == "bad")
    bad["labels"]["com.docker.lb.port"] = "not-a-port"
    data["refused"] = [REFUSAL]  # as the controller sends it (meta beside the objects)
    controller.publish(data)
    proxy.wait("h.test served", lambda: proxy.serves("h.test"))
    proxy.wait("healthy", lambda: _get(proxy.listen, "/healthz")[0] == 200)  # HAProxy serves before apply returns
    health = json.loads(_get(proxy.listen, "/healthz")[1])
    assert health["refused_objects"] == [REFUSAL], health
    assert [r["service"] for r in health["refused_services"]] == ["bad"]
    metrics = _get(proxy.listen, "/metrics")[1].decode()
    assert "ingressmesh_l7_refused_objects 1.0" in metrics
    assert 'ingressmesh_l7_refused_service{service="bad"} 1.0' in metrics
    state = proxy.state()
    assert state["refused_objects"] == [REFUSAL] and [r["service"] for r in state["refused"]] == ["bad"]
    del data["refused"]  # the refusal is gone once the controller no longer reports it
    controller.publish(data)
    proxy.wait("the refusal cleared", lambda: json.loads(_get(proxy.listen, "/healthz")[1])["refused_objects"] == [])
