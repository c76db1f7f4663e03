"""TLS through a real HAProxy on loopback: certificates from a secrets directory picked by SNI,
ssl_only redirects, refused secrets, passthrough on the same port, TLS to the tasks, HTTP/2
by ALPN, and a certificate rotation under load — real clients, real certificates."""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import pytest

from ingressmesh.l7.backend_tls import BackendTlsCheck
from pki import client_context, https_get, secret, served_by, split_hello_subject, tls_connect
from swarm_real import Swarm, get


def secrets_dir(proxy) -> str:
    return proxy.settings.secrets_dir


def cert_labels(proxy, pki, host: str, version: str = "v1") -> dict:
    """Secrets `<host>_cert_<version>` / `<host>_key_<version>` holding a certificate for host."""
    cert, key = pki.leaf(f"{host}-{version}", host, org=f"{host} {version}")
    return {"ssl_cert": secret(secrets_dir(proxy), f"{host}_cert_{version}", cert),
            "ssl_key": secret(secrets_dir(proxy), f"{host}_key_{version}", key)}


def server_context(pki, name: str, host: str) -> ssl.SSLContext:
    cert, key = pki.leaf(name, host, org=f"app {name}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_two_https_hosts_each_get_their_own_certificate_and_ssl_only_redirects(tls_proxy, backends, pki):
    swarm = Swarm(backends)
    swarm.service("a", hosts="a.com", ssl_only="true", **cert_labels(tls_proxy, pki, "a.com"))
    swarm.service("b", hosts="b.com", **cert_labels(tls_proxy, pki, "b.com"))
    swarm.service("plain", hosts="plain.com")
    a1, b1, p1 = swarm.task("a1", "a"), swarm.task("b1", "b"), swarm.task("p1", "plain")
    result = tls_proxy.apply(swarm.table())
    assert result.how == "start" and not result.table.refused
    context, port = client_context(pki), tls_proxy.settings.https_port
    for host, task in (("a.com", a1), ("b.com", b1)):
        status, _, body, seen, _ = https_get(port, host, context, "/x?y=1")
        assert status == 200 and served_by(body) == task
        assert seen == {"O": f"{host} v1", "CN": host}
        headers = json.loads(body)["headers"]
        assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-for"] == "127.0.0.1"
    status, headers, _ = get(tls_proxy, "A.com:80", "/x?y=1")  # ssl_only: plain HTTP is redirected
    assert status == 301 and headers["location"] == f"https://a.com:{port}/x?y=1"
    assert get(tls_proxy, "b.com")[0] == 200 and get(tls_proxy, "plain.com")[0] == 200  # both still on HTTP
    with open(tls_proxy.haproxy.files.config) as handle:
        config = handle.read()
    assert "PRIVATE KEY" not in config and "BEGIN CERTIFICATE" not in config
    from ingressmesh.l7.state import state_document
    document = state_document(tls_proxy, 1, "")
    assert {t["host"]: (t["ssl_cert"], t["ssl_only"]) for t in document["tls"]} == {
        "a.com": ("a.com_cert_v1", True), "b.com": ("b.com_cert_v1", False)}


def test_a_missing_secret_or_a_mismatched_key_refuses_only_that_service(tls_proxy, backends, pki):
    swarm = Swarm(backends)
    good = cert_labels(tls_proxy, pki, "good.com")
    swarm.service("good", hosts="good.com", **good)
    swarm.service("plain", hosts="plain.com")
    swarm.service("missing", hosts="missing.com", ssl_cert="no_such_secret", ssl_key=good["ssl_key"])
    other = cert_labels(tls_proxy, pki, "mismatch.com")
    swarm.service("mismatch", hosts="mismatch.com", ssl_cert=other["ssl_cert"], ssl_key=good["ssl_key"])
    for name in ("good", "plain", "missing", "mismatch"):
        swarm.task(f"{name}1", name)
    result = tls_proxy.apply(swarm.table())
    reasons = {r.service: r.reason for r in result.table.refused}
    assert set(reasons) == {"missing", "mismatch"}
    assert "no_such_secret is not available" in reasons["missing"]
    assert "does not match the certificate" in reasons["mismatch"]
    context, port = client_context(pki), tls_proxy.settings.https_port
    status, _, body, seen, _ = https_get(port, "good.com", context)
    assert status == 200 and served_by(body) == "good1" and seen["CN"] == "good.com"
    assert get(tls_proxy, "plain.com")[0] == 200
    # Refused: no route for their hosts (404, as for any host nobody serves)
    assert get(tls_proxy, "missing.com")[0] == 404 and get(tls_proxy, "mismatch.com")[0] == 404
    with open(f"{secrets_dir(tls_proxy)}/broken", "w") as handle:  # an unreadable PEM, after a good start
        handle.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    swarm.service("plain", hosts="plain.com", ssl_cert="broken", ssl_key=good["ssl_key"])
    result = tls_proxy.apply(swarm.table())
    assert {r.service for r in result.table.refused} == {"missing", "mismatch", "plain"}
    assert https_get(port, "good.com", context)[0] == 200 and get(tls_proxy, "plain.com")[0] == 404


def test_passthrough_shares_the_https_port_with_terminated_hosts(tls_proxy, backends, pki):
    swarm = Swarm(backends)
    swarm.service("a", hosts="a.com", **cert_labels(tls_proxy, pki, "a.com"))
    a1 = swarm.task("a1", "a")
    assert tls_proxy.apply(swarm.table()).how == "start"
    swarm.service("pass", hosts="pass.com", ssl_passthrough="true")
    p1 = swarm.task("p1", "pass", tls=server_context(pki, "p1", "pass.com"))
    assert tls_proxy.apply(swarm.table()).how == "reload"
    context, port = client_context(pki), tls_proxy.settings.https_port
    status, _, body, seen, _ = https_get(port, "pass.com", context, "/p")
    assert status == 200 and seen == {"O": "app p1", "CN": "pass.com"}  # the app's own certificate
    answer = json.loads(body)
    assert answer["backend"] == p1 and answer["tls"] and "x-forwarded-for" not in answer["headers"]
    status, _, body, seen, _ = https_get(port, "a.com", context)  # terminated on the same port
    assert status == 200 and served_by(body) == a1 and seen["CN"] == "a.com"
    assert json.loads(body)["headers"]["x-forwarded-for"] == "127.0.0.1"  # PROXY v2 kept it
    with tls_connect(port, "a.com", client_context(pki, alpn=("h2", "http/1.1"))) as tls:
        assert tls.selected_alpn_protocol() == "h2"  # behind the SNI router too
    status, headers, _ = get(tls_proxy, "pass.com", "/q")
    assert status == 301 and headers["location"] == f"https://pass.com:{port}/q"
    # HTTP-only options sit in the HTTP frontends only: the config, TCP parts and all, is clean.
    checked = subprocess.run([tls_proxy.haproxy.binary, "-c", "-f", tls_proxy.haproxy.files.config],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "WARNING" not in checked.stdout + checked.stderr, checked.stderr


def test_ssl_backend_speaks_tls_to_the_tasks_and_verifies_when_asked(tls_proxy, backends, pki, tmp_path):
    from pki import Pki
    swarm = Swarm(backends)
    swarm.service("sb", hosts="sb.com", ssl_backend="true")
    swarm.task("sb1", "sb", tls=server_context(pki, "sb1", "sb.com"))
    tls_proxy.apply(swarm.table())
    status, _, body = get(tls_proxy, "sb.com")
    assert status == 200 and json.loads(body)["tls"]
    ca = secret(secrets_dir(tls_proxy), "test_ca", pki.cert)
    swarm.service("sb", hosts="sb.com", ssl_backend="true", ssl_backend_tls_verify="required", ssl_backend_ca=ca,
                  port=str(swarm.ports["sb"]))
    result = tls_proxy.apply(swarm.table())
    assert result.how == "reload"
    assert get(tls_proxy, "sb.com")[0] == 200
    assert BackendTlsCheck().run(result.table) == []  # the proxy's own check agrees with HAProxy
    with open(tls_proxy.haproxy.files.config) as handle:
        assert "ssl verify required ca-file" in handle.read()
    wrong = secret(secrets_dir(tls_proxy), "wrong_ca", Pki(str(tmp_path / "other"), "other").cert)
    swarm.service("sb", hosts="sb.com", ssl_backend="true", ssl_backend_tls_verify="required",
                  ssl_backend_ca=wrong, port=str(swarm.ports["sb"]))
    result = tls_proxy.apply(swarm.table())
    assert result.how == "reload"
    assert get(tls_proxy, "sb.com")[0] == 503  # the task's certificate does not verify: not served
    (problem,) = BackendTlsCheck().run(result.table)  # ... and the service is named, with why
    assert (problem.service, problem.address) == ("sb", f"127.0.0.2:{swarm.ports['sb']}")
    assert "not accepted with the CA in secret wrong_ca" in problem.reason, problem.reason
    # A task that speaks plain HTTP is named too; one that does not answer is not (it may be starting).
    swarm.service("plain", hosts="plain.com", ssl_backend="true", ssl_backend_tls_verify="required", ssl_backend_ca=ca)
    swarm.task("p1", "plain")
    swarm.service("gone", hosts="gone.com", ssl_backend="true", ssl_backend_tls_verify="required", ssl_backend_ca=ca)
    swarm.tasks.append({"id": "g1", "service_id": "gone", "node_id": "n1", "since": swarm.tasks[0]["since"],
                        "addresses": [{"network_id": "lo", "address": "127.0.0.99"}]})
    problems = {p.service: p.reason for p in BackendTlsCheck(timeout=1.0).run(tls_proxy.apply(swarm.table()).table)}
    assert set(problems) == {"sb", "plain"} and "does the task speak TLS" in problems["plain"]


def test_http2_by_alpn_and_http11_still_served(tls_proxy, backends, pki):
    swarm = Swarm(backends).service("a", hosts="a.com", **cert_labels(tls_proxy, pki, "a.com"))
    swarm.task("a1", "a")
    tls_proxy.apply(swarm.table())
    port = tls_proxy.settings.https_port
    with tls_connect(port, "a.com", client_context(pki, alpn=("h2", "http/1.1"))) as tls:
        assert tls.selected_alpn_protocol() == "h2"
    status, _, body, _, alpn = https_get(port, "a.com", client_context(pki))
    assert status == 200 and alpn == "http/1.1"
    if shutil.which("curl") is None:
        return
    done = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.cert, "--resolve", f"a.com:{port}:127.0.0.1",
                           "-o", "/dev/null", "-w", "%{http_version} %{http_code}", f"https://a.com:{port}/"],
                          capture_output=True, text=True, timeout=20)
    assert done.stdout == "2 200", done.stderr


def under_load(proxy, pki, host: str, change, threads: int = 4) -> tuple[dict, set]:
    """Runs `change()` while clients open new TLS connections to `host` without pause; returns
    the request counts and the certificate versions (subject O) they saw."""
    port, context = proxy.settings.https_port, client_context(pki)
    counts, versions, stop = {"ok": 0, "failed": 0}, set(), threading.Event()

    def load():
        for _ in range(3000):  # bounded: the test stops it long before
            if stop.is_set():
                return
            try:
                status, _, _, seen, _ = https_get(port, host, context)
                counts["ok" if status == 200 else "failed"] += 1
                versions.add(seen["O"])
            except (OSError, ssl.SSLError):
                counts["failed"] += 1

    running = [threading.Thread(target=load) for _ in range(threads)]
    for thread in running:
        thread.start()
    try:
        time.sleep(0.5)
        change()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in running:
            thread.join(30)
    return counts, versions


@pytest.mark.parametrize("passthrough", [False, True], ids=["direct", "behind-sni-router"])
def test_certificate_rotation_under_load_fails_no_request(tls_proxy, backends, pki, passthrough):
    swarm = Swarm(backends).service("a", hosts="a.com", **cert_labels(tls_proxy, pki, "a.com"))
    swarm.task("a1", "a")
    swarm.task("a2", "a")
    if passthrough:
        swarm.service("pass", hosts="pass.com", ssl_passthrough="true")
        swarm.task("p1", "pass", tls=server_context(pki, "p1", "pass.com"))
    tls_proxy.apply(swarm.table())

    def rotate():
        swarm.service("a", hosts="a.com", port=str(swarm.ports["a"]), **cert_labels(tls_proxy, pki, "a.com", "v2"))
        assert tls_proxy.apply(swarm.table()).how == "reload"

    counts, versions = under_load(tls_proxy, pki, "a.com", rotate)
    print(f"rotation under load ({'behind the SNI router' if passthrough else 'direct'}): "
          f"{counts['ok']} ok, {counts['failed']} failed")
    assert counts["failed"] == 0 and counts["ok"] > 20
    assert versions == {"a.com v1", "a.com v2"}
    assert https_get(tls_proxy.settings.https_port, "a.com", client_context(pki))[3]["O"] == "a.com v2"
    assert len([n for n in os.listdir(tls_proxy.certs.out_dir) if n.endswith(".pem")]) == 1


def test_passthrough_hosts_coming_and_going_switch_the_https_port_without_a_failure(tls_proxy, backends, pki):
    """The first passthrough host puts the SNI router in front, the last one takes it away: the
    old worker may still be handing a connection to the internal listener then."""
    swarm = Swarm(backends).service("a", hosts="a.com", **cert_labels(tls_proxy, pki, "a.com"))
    swarm.task("a1", "a")
    tls_proxy.apply(swarm.table())

    def come_and_go():
        for i in range(4):
            swarm.service("pass", hosts="pass.com", ssl_passthrough="true")
            swarm.task(f"p{i}", "pass", tls=server_context(pki, f"p{i}", "pass.com"))
            assert tls_proxy.apply(swarm.table()).how == "reload"
            time.sleep(0.2)
            swarm.services.pop("pass")
            swarm.remove(f"p{i}")
            assert tls_proxy.apply(swarm.table()).how == "reload"
            time.sleep(0.2)

    counts, _ = under_load(tls_proxy, pki, "a.com", come_and_go)
    print(f"https port switched 8 times under load: {counts['ok']} ok, {counts['failed']} failed")
    assert counts["failed"] == 0 and counts["ok"] > 20


def test_a_client_hello_in_two_segments_is_still_routed_by_its_sni(tls_proxy, backends, pki):
    swarm = Swarm(backends).service("a", hosts="a.com", **cert_labels(tls_proxy, pki, "a.com"))
    swarm.service("pass", hosts="pass.com", ssl_passthrough="true")
    swarm.task("a1", "a")
    swarm.task("p1", "pass", tls=server_context(pki, "p1", "pass.com"))
    tls_proxy.apply(swarm.table())
    port, context = tls_proxy.settings.https_port, client_context(pki)
    assert split_hello_subject(port, "pass.com", context)["O"] == "app p1"
    assert split_hello_subject(port, "a.com", context)["O"] == "a.com v1"


@pytest.mark.parametrize("labels", [{"ssl_cert": "c", "ssl_key": "k"}, {"ssl_passthrough": "true"}])
def test_tls_labels_without_an_https_port_refuse_the_service(proxy, backends, labels):
    swarm = Swarm(backends).service("t", hosts="t.com", **labels).service("p", hosts="p.com")
    swarm.task("t1", "t")
    swarm.task("p1", "p")
    result = proxy.apply(swarm.table())
    assert [r.service for r in result.table.refused] == ["t"] and "no HTTPS port" in result.table.refused[0].reason
    assert get(proxy, "p.com")[0] == 200
