"""The client's address through a real HAProxy on loopback (issue 21): PROXY v2 to the tasks
that ask for it (io.ingressmesh.lb.proxy_protocol), PROXY v2 accepted from an L4 balancer in
front (accept_proxy), and ip_hash choosing one task per client on every replica."""
from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest

from ingressmesh.l7.applier import RouteApplier
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles
from l7_backends import free_ports
from proxy_v2 import header
from swarm_real import Swarm, get, second_replica


def served(response) -> dict:
    status, _, body = response
    assert status == 200, response
    return json.loads(body)


def raw_request(port: int, host: str, prefix: bytes = b"") -> bytes:
    """`prefix` (a PROXY header) then one HTTP/1.0 GET on a fresh connection; all it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(prefix + f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def body_of(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") or head.startswith(b"HTTP/1.0 200 "), answer[:200]
    return json.loads(body)


def config_of(applier) -> str:
    with open(applier.haproxy.files.config) as handle:
        return handle.read()


def server_lines(config: str, backend: str) -> list[str]:
    section = config.split(f"backend {backend}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines() if line.strip().startswith("server ")]


def test_the_label_makes_the_proxy_send_proxy_v2_with_the_clients_address(proxy, backends):
    swarm = (Swarm(backends).service("pp", hosts="pp.com", proxy_protocol="true")
             .service("plain", hosts="plain.com"))
    apps = {swarm.task("pp1", "pp", proxy_v2=True), swarm.task("pp2", "pp", proxy_v2=True)}
    swarm.task("plain1", "plain")
    assert proxy.apply(swarm.table()).error is None
    for source in ("127.0.1.5", "127.0.1.6"):
        answers = [served(get(proxy, "pp.com", source=source)) for _ in range(4)]
        assert {a["proxy_v2_client"] for a in answers} == {source}
        assert {a["backend"] for a in answers} == apps  # round robin over both tasks
        # A service without the label gets plain HTTP (its app would refuse a PROXY header).
        assert served(get(proxy, "plain.com", source=source))["headers"]["x-forwarded-for"] == source
    config = config_of(proxy)
    assert all(line.endswith(" send-proxy-v2") for line in server_lines(config, "be:pp"))  # free slots too
    assert not any("send-proxy" in line for line in server_lines(config, "be:plain"))
    # A task that arrives later is moved into a free slot at runtime: the slot already speaks PROXY v2.
    added = swarm.task("pp3", "pp", proxy_v2=True)
    assert proxy.apply(swarm.table()).how == "runtime"
    answers = [served(get(proxy, "pp.com", source="127.0.1.7")) for _ in range(6)]
    assert added in {a["backend"] for a in answers} and {a["proxy_v2_client"] for a in answers} == {"127.0.1.7"}
    assert not any(backends.servers[name].errors for name in apps | {added})


@pytest.fixture
def behind_balancer(tmp_path, haproxy_binary, proxy):
    """`proxy`'s settings with accept_proxy: as if an L4 balancer in front sent PROXY headers."""
    http_port, stats_port = free_ports(2)
    (tmp_path / "behind").mkdir()
    applier = RouteApplier(HAProxy(HAProxyFiles(str(tmp_path / "behind")), binary=haproxy_binary),
                           replace(proxy.settings, http_port=http_port, stats_port=stats_port, accept_proxy=True,
                                   admin_socket=str(tmp_path / "behind" / "admin.sock")))
    yield applier
    applier.haproxy.kill()


def test_accept_proxy_takes_the_client_from_the_balancers_proxy_v2_header(behind_balancer, backends):
    swarm = (Swarm(backends).service("web", hosts="web.com")
             .service("pp", hosts="pp.com", proxy_protocol="true"))
    swarm.task("web1", "web")
    swarm.task("pp1", "pp", proxy_v2=True)
    assert behind_balancer.apply(swarm.table()).error is None
    assert " accept-proxy" in config_of(behind_balancer).split("frontend http\n", 1)[1].splitlines()[0]
    port = behind_balancer.settings.http_port
    sent = header("203.0.113.9", 40001, "127.0.0.1", port)
    seen = body_of(raw_request(port, "web.com", sent))["headers"]
    assert (seen["x-forwarded-for"], seen["x-real-ip"]) == ("203.0.113.9", "203.0.113.9")
    # Both ways: the address the balancer's header named is the one the task's header carries.
    assert body_of(raw_request(port, "pp.com", sent))["proxy_v2_client"] == "203.0.113.9"
    # Without a PROXY header the connection is closed unanswered (nothing may claim an address).
    assert not raw_request(port, "web.com").startswith(b"HTTP/")


def test_ip_hash_sends_a_client_to_the_same_task_on_every_replica(proxy, backends, tmp_path, haproxy_binary):
    """Two proxy replicas, one that saw the tasks arrive one by one and one started later that saw
    them all at once (as a restarted replica does), send one client address to one task, also
    after a task arrives at runtime.  HAProxy 2.6 hashes a server by its slot (2.7's hash-key is
    not there yet), so this holds while their slots agree (docs/l7-routing.md, ip_hash)."""
    swarm = Swarm(backends).service("h", hosts="h.com", ip_hash="true")
    for i in range(3):
        swarm.task(f"h{i}", "h")
        assert proxy.apply(swarm.table()).error is None
    other = second_replica(proxy, tmp_path, haproxy_binary)
    try:
        assert other.apply(swarm.table()).error is None
        sources = [f"127.0.1.{i}" for i in range(2, 26)]
        chosen = {source: served(get(proxy, "h.com", source=source))["backend"] for source in sources}
        assert len(set(chosen.values())) >= 2, chosen
        assert {s: served(get(other, "h.com", source=s))["backend"] for s in sources} == chosen
        swarm.task("h3", "h")
        assert proxy.apply(swarm.table()).how == other.apply(swarm.table()).how == "runtime"
        now = {s: served(get(proxy, "h.com", source=s))["backend"] for s in sources}
        assert {s: served(get(other, "h.com", source=s))["backend"] for s in sources} == now
        assert "h3" in now.values() and all(now[s] in (chosen[s], "h3") for s in sources), now
    finally:
        other.haproxy.kill()
