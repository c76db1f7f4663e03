"""bench/l7.py's TLS-host row (issue 20): N terminated TLS hosts, one service and one task each,
all naming one wildcard certificate secret (one PEM file, N crt-list lines).  In process: plan
(from_dict + plan_routes), certificate resolution, render, `haproxy -c`, cold start, seamless
reloads (+1 TLS host each), HAProxy's and this (planner) process's memory."""
from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import replace

import l7_helpers as h
from ingressmesh import snapshot
from ingressmesh.l7 import slots
from ingressmesh.l7.applier import RouteApplier
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles
from ingressmesh.l7.render import ProxySettings, render_config, render_map
from ingressmesh.l7.render_tls import render_crt_list
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions
from ingressmesh.testbed.pki import Pki

OPTIONS = PlanOptions(now=1000.0)
DOMAIN = "tls.bench.local"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def tls_cluster(n: int, port: int, labels: dict) -> h.Cluster:
    swarm = h.Cluster([])
    for i in range(n):
        name = f"tls{i:05d}"
        swarm.service(name, f"{name}.{DOMAIN}", port)
        swarm.services[name]["labels"].update(labels)
        swarm.task(f"{name}-0", name, f"127.2.{i // 256}.{i % 256}")  # nothing listens: never sent to
    return swarm


def tls_hosts_at_scale(n: int, workdir: str, haproxy: str, backend_port: int, reloads: int) -> dict:
    secrets = os.path.join(workdir, "tls-scale-secrets")
    os.makedirs(secrets, mode=0o700)
    cert, key = Pki(os.path.join(workdir, "tls-scale-pki")).leaf("wild", f"*.{DOMAIN}")
    shutil.copyfile(cert, os.path.join(secrets, "wild_cert"))
    shutil.copyfile(key, os.path.join(secrets, "wild_key"))
    labels = {"com.docker.lb.ssl_cert": "wild_cert", "com.docker.lb.ssl_key": "wild_key"}
    swarm = tls_cluster(n, backend_port, labels)
    directory = os.path.join(workdir, "tls-scale")
    os.makedirs(directory, mode=0o700)
    settings = ProxySettings(http_port=h.free_port(), https_port=h.free_port(), bind_address="127.0.0.1",
                             stats_port=h.free_port(), admin_socket=os.path.join(directory, "admin.sock"),
                             proxy_id="bench", secrets_dir=secrets)
    applier = RouteApplier(HAProxy(HAProxyFiles(directory), binary=haproxy), settings)
    try:
        data = swarm.to_dict()
        started = time.perf_counter()
        cluster = snapshot.from_dict(data)
        found = {"tls_hosts": n, "from_dict_ms": _ms(started)}
        started = time.perf_counter()
        table = plan_routes(cluster, options=OPTIONS)
        found["plan_routes_ms"] = _ms(started)
        started = time.perf_counter()
        resolved = applier.certs.resolve(table, https=True)
        found["certs_resolve_ms"] = _ms(started)
        if resolved.refused or len(resolved.tls_hosts) != n:
            raise RuntimeError(f"{len(resolved.refused)} refused, {len(resolved.tls_hosts)} TLS hosts of {n}")
        crt_list = os.path.join(directory, "check-crt-list")
        map_path = os.path.join(directory, "check.map")
        started = time.perf_counter()
        text = render_config(resolved, slots.assign({}, resolved), replace(settings, map_file=map_path,
                                                                             crt_list=crt_list))
        lists = {map_path: render_map(resolved), crt_list: render_crt_list(resolved)}
        found["slots_and_render_ms"] = _ms(started)
        for path, body in {**lists, os.path.join(directory, "check.cfg"): text}.items():
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(body)
        started = time.perf_counter()
        applier.haproxy.check(os.path.join(directory, "check.cfg"))
        found["haproxy_check_ms"] = _ms(started)
        found["config_kb"], found["crt_list_kb"] = round(len(text) / 1024), round(len(lists[crt_list]) / 1024)
        started = time.perf_counter()
        with h.stderr_to(os.path.join(workdir, "tls-scale-haproxy.log")):  # the master logs there for good
            outcome = applier.apply(table)
        if outcome.how != "start":
            raise RuntimeError(f"haproxy did not start on {n} TLS hosts: {applier.last_error}")
        found["apply_start_ms"] = _ms(started)
        applies = []
        for k in range(reloads):  # +1 TLS host each: the whole apply (resolve, render, check, reload)
            swarm.service(f"late{k}", f"late{k}.{DOMAIN}", backend_port)
            swarm.services[f"late{k}"]["labels"].update(labels)
            swarm.task(f"late{k}-0", f"late{k}", f"127.3.0.{k + 1}")
            started = time.perf_counter()
            table = plan_routes(snapshot.from_dict(swarm.to_dict()), options=OPTIONS)
            outcome = applier.apply(table)
            if outcome.how != "reload":
                raise RuntimeError(f"expected a reload, got {outcome}")
            applies.append(_ms(started))
            time.sleep(0.25)  # past the applier's reload spacing
        found["snapshot_to_reloaded_ms"] = {"median": statistics.median(applies), "max": max(applies),
                                            "count": reloads,
                                            "what": "from_dict + plan_routes + apply (certs, render, haproxy -c, "
                                                    "SIGUSR2, new worker answering)"}
        deadline = time.monotonic() + 60  # old workers leave (deinit of 10,000 backends takes a while)
        while len(h.children(applier.haproxy.master_pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        found["haproxy_rss"] = h.haproxy_rss(applier.haproxy.master_pid)
        found["planner_process_rss_mb"] = round(h.rss_kb(os.getpid()) / 1024, 1)
        return found
    finally:
        applier.haproxy.kill()
