"""The L7 planner and renderer grow linearly with the TLS hosts (issue 20: grouping the routes
once per TLS host made 8,000 hosts cost seconds per snapshot in every proxy).  Measured as work,
not time: the Python lines executed for n and for 2n hosts, so a loaded CI cannot flake it."""
import sys
from dataclasses import replace

from ingressmesh import snapshot
from ingressmesh.l7 import render_tls, slots
from ingressmesh.l7.render import ProxySettings, render_config, render_map
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions

from l7_swarm import NODES, NOW, service

PACKAGE = sys.modules["ingressmesh.l7.routes"].__file__.rsplit("/", 1)[0]


def tls_cluster(n: int):
    """n services, each with its own terminated host (ssl_only on every third, passthrough on
    every fifth), and n plain services (routes the TLS grouping must skip); one task each on a
    /16 overlay."""
    services, tasks = [], []
    for i in range(2 * n):
        name = f"svc{i:04d}"
        labels = {"hosts": f"h{i}.tls.test" if i < n else f"plain{i}.test", "port": "8080"}
        if i < n and i % 5 == 0:
            labels["ssl_passthrough"] = "true"
        elif i < n:
            labels.update(ssl_cert="wild.crt", ssl_key="wild.key", ssl_only="true" if i % 3 == 0 else "false")
        services.append(service(name, labels))
        tasks.append({"id": f"{name}-1", "service_id": name, "node_id": "n1", "since": NOW - 100,
                      "addresses": [{"network_id": "bignet", "address": f"10.8.{i // 250}.{i % 250 + 2}"}]})
    network = {"id": "bignet", "name": "big", "subnet": "10.8.0.0/16"}
    return snapshot.from_dict({"nodes": NODES, "networks": [network], "services": services, "tasks": tasks})


def plan_and_render(n: int) -> tuple[object, str]:
    table = plan_routes(tls_cluster(n), options=PlanOptions(now=NOW))
    table = replace(table, tls_hosts=tuple(replace(t, pem=f"/tls/{t.host}.pem") if t.cert else t
                                           for t in table.tls_hosts))
    settings = ProxySettings(https_port=8443)
    text = render_config(table, slots.assign({}, table), settings) + render_map(table) \
        + render_tls.render_crt_list(table)
    return table, text


def lines_executed(func) -> int:
    """Line events inside ingressmesh/l7 while `func` runs (a comprehension's every turn counts)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(PACKAGE) else None

    sys.settrace(tracer)
    try:
        func()
    finally:
        sys.settrace(None)
    return count


def test_tls_hosts_are_planned_and_rendered_as_asked():
    table, text = plan_and_render(10)
    hosts = {t.host: t for t in table.tls_hosts}
    assert not table.refused and len(table.routes) == 20
    assert set(hosts) == {f"h{i}.tls.test" for i in range(10)}  # the plain hosts carry no TLS
    assert hosts["h0.tls.test"].passthrough and hosts["h3.tls.test"].only and not hosts["h1.tls.test"].only
    assert all(t.services == (f"svc{int(t.host[1:].split('.')[0]):04d}",) for t in table.tls_hosts)
    assert "/tls/h1.tls.test.pem h1.tls.test" in text and "req_ssl_sni -i h5.tls.test" in text


def test_planning_and_rendering_tls_hosts_is_linear():
    small = lines_executed(lambda: plan_and_render(200))
    large = lines_executed(lambda: plan_and_render(800))
    # Linear work grows 4x (fixed costs make it a little less); the scan of every route per TLS
    # host that issue 20 found made it 6.2x here, and more the more hosts there are.
    assert large / small < 4.6, (small, large)
