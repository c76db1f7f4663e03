"""The L7 layer's TLS and sessions on the real swarm lab (issue "L7 layer, part 2", tests 1-8):
certificates from Docker secrets made by the test's own CA (openssl), apps that speak TLS
themselves (the lab's python image), websockets and sticky sessions, requests from the client
namespace through every node."""
from __future__ import annotations

import time

import pytest

from ingressmesh.lab import PYTHON_IMAGE
from ingressmesh.testbed.l7_probe import http_request, https_request
from ingressmesh.testbed.swarm_probe import LoadGenerator
from ingressmesh.testbed.websocket import echo
from l7_helpers import (BLUE_PORT, BLUE_PROXY, DEFAULT_PROXY, Browser, HTTP_PORT, HTTPS_PORT, LB, every_node, labelled,
                        proxies_deployed, reload_counts, replica_get, replica_json, replicas,
                        served_by_every_replica, settled_replicas, wait_routed)
from l7_tls_helpers import every_replica_serves, https_probe, open_websocket, tls_everywhere, wait_https
from swarm_helpers import node_number, remove_service, running_tasks, wait_for, wait_running


@pytest.fixture(scope="module")
def l7(mesh):
    yield from proxies_deployed(mesh)


@pytest.fixture(autouse=True)
def settled(l7):
    """Each test starts with both proxy services done rolling (secrets attach and detach by
    start-first updates)."""
    settled_replicas(l7.lab, DEFAULT_PROXY, 2)
    settled_replicas(l7.lab, BLUE_PROXY, 1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from ingressmesh.testbed.pki import Pki
    return Pki(str(tmp_path_factory.mktemp("pki")))


def secret(lab, name: str, path: str) -> str:
    # The label lets the proxies receive it (l7/secret_policy.py: allowed by label or l7.toml only).
    lab.docker(1, "secret", "create", "--label", "io.ingressmesh.l7.secret=true", name, path)
    return name


def leaf_secrets(lab, pki, name: str, host: str, org: str) -> tuple[str, str]:
    """Secrets <name>_cert and <name>_key: a certificate for host (subject O = org) and its key."""
    cert, key = pki.leaf(name, host, org=org)
    return secret(lab, f"{name}_cert", cert), secret(lab, f"{name}_key", key)


def tls_app(lab, name: str, tls: tuple[str, str], *options: str, **labels) -> None:
    """A labelled service whose app terminates TLS itself with the (cert, key) secrets."""
    cert, key = tls
    labelled(lab, name, "--secret", cert, "--secret", key, "--env", f"TLS_CERT=/run/secrets/{cert}",
             "--env", f"TLS_KEY=/run/secrets/{key}", *options, image=PYTHON_IMAGE, **labels)


def test_1_3_8_certificates_by_sni_ssl_only_h2_and_bad_secrets_refused_by_name(l7, pki):
    """Each HTTPS host gets its own certificate through every node, ssl_only redirects, HTTP/2
    by ALPN; a missing secret and a mismatched key refuse only their service, by name; TLS and
    plain hosts keep answering."""
    lab = l7.lab
    for name, host in (("tlsa", "a.tls.l7"), ("tlsb", "b.tls.l7"), ("tlsc", "c.tls.l7")):
        cert, key = pki.leaf(name, host, org="v1")
        secret(lab, f"{name}_cert", cert)
        secret(lab, f"{name}_key", key if name != "tlsc" else pki.path("tlsa.key"))  # c: a's key, mismatched
    labelled(lab, "tls-a", image=PYTHON_IMAGE, hosts="a.tls.l7", port="80", ssl_cert="tlsa_cert", ssl_key="tlsa_key",
             ssl_only="true")
    labelled(lab, "tls-b", image=PYTHON_IMAGE, hosts="b.tls.l7", port="80", ssl_cert="tlsb_cert", ssl_key="tlsb_key")
    labelled(lab, "tls-c", hosts="c.tls.l7", port="80", ssl_cert="tlsc_cert", ssl_key="tlsc_key")
    labelled(lab, "tls-d", hosts="d.tls.l7", port="80", ssl_cert="nope_cert", ssl_key="nope_key")
    labelled(lab, "tls-plain", hosts="plain.tls.l7", port="80")
    try:
        for name in ("tls-a", "tls-b", "tls-c", "tls-d", "tls-plain"):
            wait_running(lab, name, 1)
        wait_https(lab, pki.cert, "a.tls.l7", "b.tls.l7")
        for n in lab.config.node_numbers:
            for host in ("a.tls.l7", "b.tls.l7"):
                answer = https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, host, pki.cert)
                assert (answer.status, answer.subject["commonName"]) == (200, host)
                assert answer.headers["x-seen-x-forwarded-proto"] == "https"
            answer = http_request(lab.client_netns(), lab.node_address(n), HTTP_PORT, "a.tls.l7", "/x?y=1")
            assert answer.status == 301 and answer.headers["location"] == f"https://a.tls.l7:{HTTPS_PORT}/x?y=1"
            answer = https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, "b.tls.l7", pki.cert,
                             alpn=("h2", "http/1.1"))
            assert answer.protocol == "h2"
        assert {a.status for a in every_node(lab, "plain.tls.l7")} == {200}

        def refused():
            """Once every replica has the secrets that exist (the proxy service rolls them out
            start-first): tls-c refused for its key, tls-d for its missing secret, nobody else."""
            found = {}
            for n, _, ip in replicas(lab, DEFAULT_PROXY):
                found = {r["service"]: r["reason"] for r in replica_json(lab, n, ip, "/healthz")[1]["refused_services"]}
                if ("does not match" not in found.get("tls-c", "") or "tls-d" not in found
                        or {"tls-a", "tls-b"} & set(found)):
                    return None
            return found
        found = wait_for("tls-c and tls-d (only) refused by every replica", refused, timeout=120, interval=0.5)
        print(f"refused tls-c: {found['tls-c']}\nrefused tls-d: {found['tls-d']}")
        assert "nope_cert" in found["tls-d"]
    finally:
        for name in ("tls-a", "tls-b", "tls-c", "tls-d", "tls-plain"):
            remove_service(lab, name)


def test_2_certificate_rotation_under_load_drops_nothing(l7, pki):
    """New secrets, the labels pointed at them: every replica serves the new certificate
    (the proxy service rolls start-first to mount them), and not one request fails."""
    lab = l7.lab
    v1 = leaf_secrets(lab, pki, "rot1", "rot.tls.l7", "v1")
    v2 = leaf_secrets(lab, pki, "rot2", "rot.tls.l7", "v2")
    labelled(lab, "rot", "--replicas", "2", hosts="rot.tls.l7", port="80", ssl_cert=v1[0], ssl_key=v1[1])
    try:
        wait_running(lab, "rot", 2)
        wait_https(lab, pki.cert, "rot.tls.l7", org="v1")  # the rollout that mounted v1 is over
        targets = [(lab.node_address(n), HTTPS_PORT) for n in lab.config.node_numbers]
        load = LoadGenerator(lab.client_netns(), targets, pause=0.01, limit=30000,
                             probe=https_probe("rot.tls.l7", pki.cert))
        with load:
            time.sleep(2)
            lab.docker(1, "service", "update", "--detach", "--label-add", f"{LB}ssl_cert={v2[0]}",
                       "--label-add", f"{LB}ssl_key={v2[1]}", "rot")
            wait_for("v2 on every proxy replica", lambda: every_replica_serves(lab, "rot.tls.l7", pki.cert, "v2"),
                     timeout=180, interval=0.5)
            settled_replicas(lab, DEFAULT_PROXY, 2)
            time.sleep(2)
        result = load.result
        print(f"rotation under load: {result.ok} requests answered, {len(result.failures)} failed; "
              f"certificate versions seen {dict(result.seen)}; first failures {result.failures[:3]}")
        assert not result.failures and result.ok > 100
        assert set(result.seen) == {"v1", "v2"}
        assert tls_everywhere(lab, "rot.tls.l7", pki.cert, "v2")
    finally:
        remove_service(lab, "rot")


def test_4_passthrough_reaches_the_app_by_sni_on_the_same_port_as_terminated_hosts(l7, pki):
    lab = l7.lab
    own = leaf_secrets(lab, pki, "ptapp", "pt.tls.l7", "the app itself")
    proxy_held = leaf_secrets(lab, pki, "ptterm", "term.tls.l7", "terminated by the proxy")
    tls_app(lab, "pt", own, hosts="pt.tls.l7", port="80", ssl_passthrough="true")
    labelled(lab, "pt-term", image=PYTHON_IMAGE, hosts="term.tls.l7", port="80", ssl_cert=proxy_held[0],
             ssl_key=proxy_held[1])
    try:
        wait_running(lab, "pt", 1)
        wait_running(lab, "pt-term", 1)
        wait_https(lab, pki.cert, "pt.tls.l7", "term.tls.l7")
        for n in lab.config.node_numbers:
            app = https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, "pt.tls.l7", pki.cert)
            assert app.subject["organizationName"] == "the app itself" and app.headers["x-tls"] == "yes"
            assert not [h for h in app.headers if h.startswith("x-seen-")]  # the proxy added no header
            assert "x-upstream-addr" not in app.headers and app.status == 200
            term = https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, "term.tls.l7", pki.cert)
            assert term.subject["organizationName"] == "terminated by the proxy" and term.headers["x-tls"] == "no"
            assert term.headers["x-seen-x-forwarded-proto"] == "https"
    finally:
        remove_service(lab, "pt")
        remove_service(lab, "pt-term")


def test_5_ssl_backend_speaks_tls_to_the_tasks_and_a_wrong_ca_is_reported(l7, pki, tmp_path):
    from ingressmesh.testbed.pki import Pki
    lab = l7.lab
    secret(lab, "sb_ca", pki.cert)
    secret(lab, "sb_other_ca", Pki(str(tmp_path / "other"), "other").cert)
    tls_app(lab, "sb", leaf_secrets(lab, pki, "sbapp", "sb.tls.l7", "app"), hosts="sb.tls.l7", port="80",
            ssl_backend="true", ssl_backend_tls_verify="required", ssl_backend_ca="sb_ca")
    tls_app(lab, "sb-none", leaf_secrets(lab, pki, "sbnone", "sbn.tls.l7", "app"), hosts="sbn.tls.l7", port="80",
            ssl_backend="true")
    tls_app(lab, "sb-wrong", leaf_secrets(lab, pki, "sbwrong", "sbw.tls.l7", "app"), hosts="sbw.tls.l7",
            port="80", ssl_backend="true", ssl_backend_tls_verify="required", ssl_backend_ca="sb_other_ca")
    try:
        for name in ("sb", "sb-none", "sb-wrong"):
            wait_running(lab, name, 1)
        wait_routed(lab, "sb.tls.l7", timeout=180)
        wait_routed(lab, "sbn.tls.l7", timeout=60)
        for host in ("sb.tls.l7", "sbn.tls.l7"):
            answers = every_node(lab, host)
            assert {a.status for a in answers} == {200} and {a.headers["x-tls"] for a in answers} == {"yes"}

        def reported():
            """Every replica names sb-wrong (and only it), with the CA secret, and answers 503."""
            found = replicas(lab, DEFAULT_PROXY)
            for n, _, ip in found:
                failures = replica_json(lab, n, ip, "/healthz")[1]["backend_tls_failures"]
                if {f["service"] for f in failures} != {"sb-wrong"} or replica_get(lab, n, ip, "sbw.tls.l7").status != 503:
                    return None
            return failures if len(found) == 2 else None
        failures = wait_for("sb-wrong reported by every replica", reported, timeout=60, interval=0.5)
        print(f"reported: {failures}")
        assert "sb_other_ca" in failures[0]["reason"] and "not accepted" in failures[0]["reason"]
        assert {a.status for a in every_node(lab, "sbw.tls.l7")} == {503}
    finally:
        for name in ("sb", "sb-none", "sb-wrong"):
            remove_service(lab, name)


def test_6_websocket_through_every_node_survives_five_route_reloads(l7):
    lab = l7.lab
    labelled(lab, "ws", image=PYTHON_IMAGE, hosts="ws.l7", port="80", websocket_endpoints="/ws")
    try:
        (task,) = wait_running(lab, "ws", 1)
        wait_routed(lab, "ws.l7")
        for n in lab.config.node_numbers:
            with open_websocket(lab.client_netns(), lab.node_address(n), HTTP_PORT, "ws.l7", "/ws") as sock:
                assert echo(sock, f"hello via node{n}") == f"{task['container']}:hello via node{n}"
        before = reload_counts(lab, DEFAULT_PROXY)
        with open_websocket(lab.client_netns(), lab.node_address(1), HTTP_PORT, "ws.l7", "/ws") as sock:
            for i in range(5):  # each new labelled service is a new backend: a checked seamless reload
                labelled(lab, f"ws-churn{i}", hosts=f"churn{i}.l7", port="80")
                wait_running(lab, f"ws-churn{i}", 1)
                wait_routed(lab, f"churn{i}.l7")
                assert echo(sock, f"after reload {i + 1}") == f"{task['container']}:after reload {i + 1}"
                remove_service(lab, f"ws-churn{i}")
                wait_for(f"churn{i}.l7 gone", lambda: served_by_every_replica(
                    lab, DEFAULT_PROXY, f"churn{i}.l7", status=404), timeout=60, interval=0.2)
            after = reload_counts(lab, DEFAULT_PROXY)
            assert echo(sock, "still here") == f"{task['container']}:still here"
        print(f"reloads per proxy replica (master pid, reloads, generation): before {before}, after {after}")
        assert before.keys() == after.keys()  # the same replicas: no rollout in between
        assert all(after[c][0] == before[c][0] and after[c][1] - before[c][1] >= 5 for c in before)
    finally:
        remove_service(lab, "ws")
        for i in range(5):
            remove_service(lab, f"ws-churn{i}")


def test_7_sticky_cookie_through_every_node_moves_once_when_its_task_leaves(l7):
    lab = l7.lab
    labelled(lab, "sticky", "--replicas", "3", image=PYTHON_IMAGE, hosts="sticky.l7", port="80",
             sticky_session_cookie="SID")
    try:
        tasks = wait_running(lab, "sticky", 3)
        wait_routed(lab, "sticky.l7")
        everyone = {t["container"] for t in tasks}
        seen = set()
        wait_for("all 3 tasks answer", lambda: seen.update(a.hostname for a in every_node(lab, "sticky.l7"))
                 or seen == everyone, timeout=30, interval=0.1)
        browser = Browser(lab, "sticky.l7")
        first = browser.get()
        pinned = [browser.get() for _ in range(50)]
        assert set(pinned) == {first}, pinned
        (leaving,) = [t for t in tasks if t["container"] == first]
        lab.docker(node_number(leaving), "stop", leaving["container"])
        wait_for(f"{first} gone from the routes", lambda: first not in {
            t["container"] for t in running_tasks(lab, "sticky")} and browser.get() != first, timeout=60, interval=0.3)
        moved = [browser.get() for _ in range(50)]
        print(f"sticky: 50 on {first}; after it left: {sorted(set(moved))}")
        assert len(set(moved)) == 1 and moved[0] != first
    finally:
        remove_service(lab, "sticky")


def test_7_ip_hash_with_host_publish_mode_one_client_one_task(l7):
    """ip_hash hashes the client address HAProxy sees: with publish mode host that is the real
    client (with ingress mode every client would look like the node's ingress address)."""
    lab = l7.lab
    labelled(lab, "iph", "--replicas", "3", image=PYTHON_IMAGE, hosts="iph.blue.l7", port="80", ip_hash="true",
             service_cluster="blue")
    try:
        tasks = wait_running(lab, "iph", 3)
        wait_routed(lab, "iph.blue.l7", services=(BLUE_PROXY,))
        ((n, _, ip),) = settled_replicas(lab, BLUE_PROXY, 1)
        wait_for("3 servers in the blue proxy's backend", lambda: sum(
            len(b["slots"]) for b in replica_json(lab, n, ip, "/v1/l7/state")[1]["backends"].values()
            if "iph" in b["services"]) == 3, timeout=60, interval=0.3)
        answers = [http_request(lab.client_netns(), lab.node_address(n), BLUE_PORT, "iph.blue.l7") for _ in range(30)]
        print(f"ip_hash: 30 requests from {lab.config.client_address} -> {sorted({a.hostname for a in answers})}")
        assert {a.status for a in answers} == {200}
        assert len({a.hostname for a in answers}) == 1 and answers[0].hostname in {t["container"] for t in tasks}
        assert {a.headers["x-seen-x-forwarded-for"] for a in answers} == {lab.config.client_address}
    finally:
        remove_service(lab, "iph")
