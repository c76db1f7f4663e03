"""Interlock's documented examples (docs.docker.com ee/ucp/interlock/usage/*, MKE 3.x) run on the
swarm lab as the docs give them: their `docker service create` and `docker stack deploy` commands
and compose files with the documented labels, their images replaced by offline stand-ins built
under the same names (ingressmesh/lab/standin_images.py), every answer checked through every
node's published proxy port.  The lab adds `--detach --no-resolve-image` (`--resolve-image never`
to stack deploy) and drops `--detach=false`: no registry is reachable.  docs/l7-routing.md shows
each example as it runs here."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from ingressmesh.lab import standin_images
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.l7_probe import http_request, https_request
from ingressmesh.testbed.websocket import ws_frame, ws_read
from interlock_docs import (CANARY_V1, CANARY_V2, CONTEXT, DEFAULT_BACKEND, OPENSSL, REDIRECTS, SAMPLE, STACK_DEFAULT,
                            STACK_PASSTHROUGH, STACK_SECRETS, STACK_TLS, STACK_WEB, STICKY, VIP, WEBSOCKETS, WHOAMI)
from l7_helpers import (DEFAULT_PROXY, HTTP_PORT, HTTPS_PORT, Browser, every_node, proxies_deployed, reload_counts,
                        replica_json, replicas, served_by_every_replica, settled_replicas, wait_routed)
from l7_tls_helpers import open_websocket
from swarm_helpers import remove_service, wait_for, wait_running


def run_docs(lab, command: str) -> None:
    """One of the docs' `docker service create` commands on the manager, with the lab's flags."""
    argv = [arg for arg in shlex.split(command) if arg != "--detach=false"]
    assert argv[:3] == ["docker", "service", "create"], argv
    lab.docker(1, "service", "create", "--detach", "--no-resolve-image", *argv[3:])


def stack_deploy(lab, directory: str, compose: str) -> None:
    """`docker stack deploy --compose-file docker-compose.yml demo` with this compose file."""
    path = os.path.join(directory, "docker-compose.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(compose)
    lab.docker(1, "stack", "deploy", "--resolve-image", "never", "--compose-file", path, "demo", timeout=120)


def ping(answer) -> dict:
    assert answer.status == 200, answer
    return json.loads(answer.body)


def servers(lab, service: str) -> set:
    """How many servers get new requests, on each proxy replica, in the backends `service` is in."""
    return {sum(s.get("serving") == "active" for b in replica_json(lab, n, ip, "/v1/l7/state")[1]["backends"].values()
                if service in b["services"] for s in b["slots"]) for n, _, ip in replicas(lab, DEFAULT_PROXY)}


def wait_servers(lab, service: str, count: int) -> None:
    wait_for(f"{count} servers for {service} on every proxy replica", lambda: servers(lab, service) == {count},
             timeout=60, interval=0.3)


def share(lab, metadata: str, count: int) -> float:
    """The share of `count` /ping requests for demo.local (every node in turn) answered by `metadata`."""
    nodes = lab.config.node_numbers
    answers = [ping(http_request(lab.client_netns(), lab.node_address(nodes[i % len(nodes)]), HTTP_PORT,
                                 "demo.local", "/ping")) for i in range(count)]
    return sum(a.get("metadata") == metadata for a in answers) / count


def removed(lab, name: str, host: str, path: str = "/ping") -> None:
    """Remove a service and wait until no proxy replica routes its host any more (404)."""
    remove_service(lab, name)
    wait_for(f"{host} unrouted", lambda: served_by_every_replica(lab, DEFAULT_PROXY, host, status=404, path=path),
             timeout=60, interval=0.2)


@pytest.fixture(scope="module")
def interlock(mesh):
    """The stand-in images on every node, network `demo` (`docker network create -d overlay demo`),
    one proxy service (HTTP 8080, HTTPS 8443, the stack's secrets allowed) and the whoami
    service that keeps `demo` attached; all removed afterwards."""
    lab = mesh.lab
    started = time.monotonic()
    standin_images.build(lab)
    print(f"stand-in images built on every node in {time.monotonic() - started:.1f} s")
    lab.docker(1, "network", "create", "-d", "overlay", "demo")
    config = l7_lab.extension("default", mesh.controller_url, HTTP_PORT, ssl_port=HTTPS_PORT, proxy_secrets=STACK_SECRETS)
    proxies = proxies_deployed(mesh, config, proxies=((DEFAULT_PROXY, 2),))
    try:
        ready = next(proxies)
        run_docs(lab, WHOAMI)
        wait_running(lab, "whoami", 1)
        wait_routed(lab, "whoami.local", timeout=180)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        yield ready
    finally:
        remove_service(lab, "whoami")
        for _ in proxies:  # its clean-up: the proxy service removed
            pass
        wait_for("network demo removed", lambda: gone(lab, "network", "demo"), timeout=120, interval=1)


def gone(lab, kind: str, name: str) -> bool:
    """Removes a network or secret; true once it does not exist (removing may fail while in use)."""
    if lab.docker(1, kind, "rm", name, check=False).returncode == 0:
        return True
    stderr = lab.docker(1, kind, "inspect", name, check=False).stderr.lower()
    return "no such" in stderr or "not found" in stderr


def test_1_a_service_scaled_to_four_and_a_default_host(interlock):
    """usage/index.md (a service, then `docker service scale demo=4`) and default-backend.md."""
    lab = interlock.lab
    run_docs(lab, SAMPLE)
    run_docs(lab, DEFAULT_BACKEND)
    try:
        (task,), (fallback,) = wait_running(lab, "demo", 1), wait_running(lab, "demo-default", 1)
        wait_routed(lab, "demo.local")
        for answer in every_node(lab, "demo.local", "/ping"):
            body = ping(answer)
            assert (body["instance"], body["version"]) == (task["container"], "0.1")
            assert body["request_id"] == answer.headers["x-request-id"] and len(body["request_id"]) >= 16
        wait_routed(lab, "nobody.example.net")  # what no route claims goes to the default host
        for answer in every_node(lab, "nobody.example.net", "/any/page"):
            assert answer.status == 200 and "interlock default app" in answer.body and fallback["container"] in answer.body
        for answer in every_node(lab, "whoami.local", "/who"):
            assert answer.body.startswith("Hostname: ") and "GET /who HTTP/1.1" in answer.body
        lab.docker(1, "service", "scale", "--detach", "demo=4")
        tasks = {t["container"] for t in wait_running(lab, "demo", 4)}
        wait_servers(lab, "demo", 4)
        seen = set()
        wait_for("all 4 replicas answering through every node", lambda: seen.update(
            ping(a)["instance"] for a in every_node(lab, "demo.local", "/ping")) or seen == tasks, timeout=30, interval=0)
        print(f"demo=4: instances seen {sorted(seen)}")
    finally:
        remove_service(lab, "demo-default")
        removed(lab, "demo", "demo.local")


def test_2_canary_twenty_then_half_then_all(interlock):
    """canary.md: v1 x4 and v2 x1 (20 %), `docker service scale demo-v2=4` (50 %), then demo-v1=0."""
    lab = interlock.lab
    run_docs(lab, CANARY_V1)
    run_docs(lab, CANARY_V2)
    try:
        wait_running(lab, "demo-v1", 4)
        wait_running(lab, "demo-v2", 1)
        wait_servers(lab, "demo-v1", 5)
        first = share(lab, "demo-version-2", 300)
        lab.docker(1, "service", "scale", "--detach", "demo-v2=4")
        wait_running(lab, "demo-v2", 4)
        wait_servers(lab, "demo-v2", 8)
        second = share(lab, "demo-version-2", 300)
        lab.docker(1, "service", "scale", "--detach", "demo-v1=0")
        wait_servers(lab, "demo-v2", 4)  # demo-v1's tasks gone from every proxy replica
        last = [ping(a) for _ in range(10) for a in every_node(lab, "demo.local", "/ping")]
        print(f"canary: v2 answered {first:.1%} (v1 x4, v2 x1), {second:.1%} (v2 x4), then "
              f"{sum(a['metadata'] == 'demo-version-2' for a in last)} of {len(last)} (v1 x0)")
        assert 0.10 <= first <= 0.32 and 0.35 <= second <= 0.65
        assert {(a["metadata"], a["version"]) for a in last} == {("demo-version-2", "0.2")}
    finally:
        remove_service(lab, "demo-v1")
        removed(lab, "demo-v2", "demo.local")


def test_3_context_root_with_rewrite_then_a_redirect(interlock):
    """context.md (demo.local/app, the prefix stripped), then redirects.md (old.local -> new.local)."""
    lab = interlock.lab
    run_docs(lab, CONTEXT)
    try:
        wait_running(lab, "demo", 1)
        wait_for("demo.local/app/ routed", lambda: served_by_every_replica(lab, DEFAULT_PROXY, "demo.local", path="/app/"),
                 timeout=60, interval=0.2)
        for answer in every_node(lab, "demo.local", "/app/ping"):  # the app was asked for /ping
            assert ping(answer)["metadata"] == "demo-context-root"
        for answer in every_node(lab, "demo.local", "/app/"):
            assert answer.status == 200 and "<h1>docker-demo</h1>" in answer.body
        assert {a.status for a in every_node(lab, "demo.local", "/ping")} == {404}  # outside the context root
    finally:
        removed(lab, "demo", "demo.local", path="/app/")
    run_docs(lab, REDIRECTS)
    try:
        wait_running(lab, "demo", 1)
        wait_routed(lab, "new.local")
        for answer in every_node(lab, "old.local"):
            assert (answer.status, answer.headers["location"]) == (302, "http://new.local/")
        for answer in every_node(lab, "new.local", "/ping"):
            assert ping(answer)["metadata"] == "demo-new"
    finally:
        removed(lab, "demo", "new.local")


def test_4_sticky_session_cookie_through_every_node(interlock):
    """sessions.md: 5 replicas; curl's cookie jar pins every request to one of them."""
    lab = interlock.lab
    run_docs(lab, STICKY)
    try:
        wait_running(lab, "demo", 5)
        wait_servers(lab, "demo", 5)
        cookieless = {ping(a)["instance"] for _ in range(3) for a in every_node(lab, "demo.local", "/ping")}
        browser = Browser(lab, "demo.local", "/ping")
        pinned = [ping(browser.request())["instance"] for _ in range(30)]
        print(f"sticky: without the cookie {len(cookieless)} instances in 9 requests; with it {set(pinned)} in 30")
        assert len(cookieless) > 1 and len(set(pinned)) == 1 and browser.cookie.startswith("session=")
    finally:
        removed(lab, "demo", "demo.local")


def test_5_websocket_chat_reaches_every_client(interlock):
    """websockets.md: a chat line sent through one node reaches the clients of every node."""
    lab = interlock.lab
    run_docs(lab, WEBSOCKETS)
    try:
        wait_running(lab, "demo", 1)
        wait_routed(lab, "demo.local")
        assert all("<title>websocket chat</title>" in a.body for a in every_node(lab, "demo.local"))
        clients = [open_websocket(lab.client_netns(), lab.node_address(n), HTTP_PORT, "demo.local", "/ws")
                   for n in lab.config.node_numbers]
        try:
            time.sleep(0.3)  # each handshake reaches the task before the first line is sent
            clients[0].sendall(ws_frame(b"hello from node1", mask=True))
            assert [ws_read(c) for c in clients] == [b"hello from node1"] * len(clients)
            clients[-1].sendall(ws_frame(b"and back", mask=True))
            assert [ws_read(c) for c in clients] == [b"and back"] * len(clients)
        finally:
            for client in clients:
                client.close()
    finally:
        removed(lab, "demo", "demo.local", path="/")


def test_6_vip_mode_one_upstream_and_no_reload_on_scale(interlock):
    """interlock-vip-mode.md: the service VIP is the only upstream; scaling needs no proxy update."""
    lab = interlock.lab
    run_docs(lab, VIP)
    try:
        wait_running(lab, "demo", 4)
        wait_routed(lab, "demo.local")
        spec = json.loads(lab.docker(1, "service", "inspect", "demo").stdout)[0]
        network = lab.docker(1, "network", "inspect", "-f", "{{.ID}}", "demo").stdout.strip()
        vip = next(v["Addr"].split("/")[0] for v in spec["Endpoint"]["VirtualIPs"] if v["NetworkID"] == network)
        answers = [a for _ in range(3) for a in every_node(lab, "demo.local", "/ping")]
        assert {a.headers["x-upstream-addr"] for a in answers} == {f"{vip}:8080"}
        assert {ping(a)["metadata"] for a in answers} == {"demo-vip-1"}
        before = reload_counts(lab, DEFAULT_PROXY)
        lab.docker(1, "service", "scale", "--detach", "demo=2")
        wait_running(lab, "demo", 2)
        time.sleep(2)  # what a proxy would have done about it, it has done by now
        answers = [a for _ in range(3) for a in every_node(lab, "demo.local", "/ping")]
        assert {a.status for a in answers} == {200} and {a.headers["x-upstream-addr"] for a in answers} == {f"{vip}:8080"}
        assert reload_counts(lab, DEFAULT_PROXY) == before  # same masters, reloads and config generation
    finally:
        removed(lab, "demo", "demo.local")


def https_ping(lab, n: int, cafile: str):
    """`curl --insecure --resolve app.example.org:8443:NODE https://app.example.org:8443/ping`,
    with the self-signed certificate as the trust anchor (the test reads its subject)."""
    return https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, "app.example.org", cafile, "/ping")


def metadata_everywhere(lab, cafile: str, metadata: str) -> bool:
    """Every node answers /ping over HTTPS from a task with this METADATA."""
    for n in lab.config.node_numbers:
        answer = https_ping(lab, n, cafile)
        if answer.status != 200 or json.loads(answer.body).get("metadata") != metadata:
            return False
    return True


def test_7_stacks_web_then_tls_termination_then_passthrough_then_default_host(interlock, tmp_path):
    """index.md's stack, then tls.md's two stacks and default-service.md's, each deployed over the
    previous one as stack `demo`; `docker stack rm demo` leaves nothing (retried while the proxies
    let go of its network and secrets)."""
    lab, work = interlock.lab, str(tmp_path)
    try:
        stack_deploy(lab, work, STACK_WEB)
        (task,) = wait_running(lab, "demo_demo", 1)
        wait_routed(lab, "app.example.org", timeout=180)  # the proxies joined demo_demo-network (a rollout)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        for answer in every_node(lab, "app.example.org", "/ping"):
            assert ping(answer)["instance"] == task["container"]

        subprocess.run(shlex.split(OPENSSL), cwd=work, check=True, capture_output=True, timeout=120)
        cert = os.path.join(work, "app.example.org.cert")
        stack_deploy(lab, work, STACK_TLS)
        wait_for("the proxy terminating TLS for app.example.org on every node",
                 lambda: metadata_everywhere(lab, cert, "proxy-handles-tls"), timeout=240, interval=1)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        for n in lab.config.node_numbers:
            answer = https_ping(lab, n, cert)
            body = json.loads(answer.body)
            assert answer.subject == {"countryName": "US", "stateOrProvinceName": "CA", "localityName": "SF",
                                      "organizationName": "Docker-demo", "commonName": "app.example.org"}
            assert (body["metadata"], body["request_id"]) == ("proxy-handles-tls", answer.headers["x-request-id"])

        stack_deploy(lab, work, STACK_PASSTHROUGH)
        wait_for("app.example.org's own TLS on every node", lambda: metadata_everywhere(lab, cert, "end-to-end-TLS"),
                 timeout=240, interval=1)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        for n in lab.config.node_numbers:
            answer = https_ping(lab, n, cert)
            assert answer.subject["commonName"] == "app.example.org" and "x-request-id" not in answer.headers
            assert json.loads(answer.body)["request_id"] == ""  # nobody between the client and the app

        stack_deploy(lab, work, STACK_DEFAULT)
        wait_for("the stack's default host on every node", lambda: all(
            "interlock default app" in a.body for a in every_node(lab, "nobody.example.net")), timeout=120, interval=0.5)
    finally:
        lab.docker(1, "stack", "rm", "demo", check=False)
        leftovers = [("network", "demo_demo-network")] + [("secret", name) for name in STACK_SECRETS]
        wait_for("stack demo's network and secrets gone", lambda: all(gone(lab, kind, name) for kind, name in leftovers),
                 timeout=120, interval=1)
