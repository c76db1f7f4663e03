"""Automatic certificates end to end on loopback: two real `ingressmesh proxy` processes follow
a stand-in controller; the issuer orders from Debian's pebble, publishes the HTTP-01 answers as
labels (so they reach both replicas through the snapshot), and the proxies serve the issued
certificate over HTTPS.  Failures (refused challenge, unreachable server, a replica that does
not answer) are named, the host keeps what it served, other hosts are unaffected."""
from __future__ import annotations

import http.client
import json
import secrets
import ssl
import threading
import time
import urllib.request

import pytest

from acme_pebble import PROXY_SERVICE, Pebble, SnapshotPublisher
from fake_controller import FakeController
from ingressmesh.daemon.http import HttpService
from ingressmesh.l7 import acme_deploy, acme_labels, acme_names, acme_probe, acme_status
from ingressmesh.l7.acme_account import derived_key_pem
from ingressmesh.l7.acme_issuer import Issuer
from ingressmesh.l7.acme_render import CHALLENGE_PATH
from ingressmesh.l7.acme_schedule import Policy
from ingressmesh.l7.acme_settings import AcmeSettings
from ingressmesh.l7.acme_store import DirectoryStore
from ingressmesh.l7.deploy_health import DeployHealth
from l7_backends import free_port, free_ports
from pki import tls_connect
from test_proxy_process import TOKEN, ProxyProcess, cluster

THUMB = "T" * 43


class Lab:
    def __init__(self, tmp_path, haproxy_binary, backends, pki, hosts: dict):
        self.proxies, self.pebble, self.controller = [], None, None
        try:
            self._start(tmp_path, haproxy_binary, backends, pki, hosts)
        except BaseException:
            self.close()  # nothing started is left behind
            raise

    def _start(self, tmp_path, haproxy_binary, backends, pki, hosts: dict):
        self.secrets = tmp_path / "secrets"  # both replicas mount the same secrets, as in a swarm
        self.secrets.mkdir()
        self.controller = FakeController(TOKEN)
        base = cluster(hosts, backends, free_port())
        for service in base["services"]:
            service["labels"][acme_labels.ACME] = "true"
        for i, https in enumerate(free_ports(2)):
            (tmp_path / f"p{i}").mkdir()
            self.proxies.append(ProxyProcess(tmp_path / f"p{i}", self.controller.url, haproxy_binary,
                                             ("--https-port", str(https), "--secrets-dir", str(self.secrets),
                                              "--proxy-service", PROXY_SERVICE)))
            self.proxies[-1].https = https
        self.publisher = SnapshotPublisher(self.controller, base)
        for proxy in self.proxies:
            for host in hosts.values():
                proxy.wait(f"{host} routed", lambda: proxy.get(host)[0] == 200, timeout=20)
        self.pebble = Pebble(str(tmp_path / "pebble"), pki, self.proxies[0].http, tuple(free_ports(4)))
        self.urls = tuple(f"http://127.0.0.1:{p.http}" for p in self.proxies)

    def issuer(self, directory: str = "", probe_urls=None, policy=None, propagation: float = 15.0,
               account_key=None) -> Issuer:
        settings = AcmeSettings(directory or self.pebble.directory, email="ops@example.org",
                                ca_bundle=self.pebble.ca_file)
        return Issuer(settings, DirectoryStore(str(self.secrets)), self.publisher, PROXY_SERVICE,
                      self.urls if probe_urls is None else probe_urls, policy=policy, propagation_timeout=propagation,
                      account_key=account_key)

    def serial(self, proxy, host: str, context: ssl.SSLContext) -> tuple[int, str]:
        """(HTTP status, the certificate's serial) of one HTTPS request on a new connection
        verified against `context`."""
        tls = tls_connect(proxy.https, host, context)
        serial = tls.getpeercert()["serialNumber"]
        conn = http.client.HTTPConnection(host, proxy.https, timeout=5)
        conn.sock = tls
        try:
            conn.request("GET", "/", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            return response.status, serial
        finally:
            conn.close()

    def close(self):
        for proxy in self.proxies:
            proxy.stop()
        if self.pebble is not None:
            self.pebble.close()
        if self.controller is not None:
            self.controller.close()


@pytest.fixture
def lab(tmp_path, haproxy_binary, backends, pki):
    made = []

    def start(hosts):
        made.append(Lab(tmp_path, haproxy_binary, backends, pki, hosts))
        return made[-1]
    yield start
    for one in made:
        one.close()


def test_http01_answers_reach_every_replica_through_the_snapshot(lab):
    env = lab({"app": "app.test", "other": "other.test"})
    token = secrets.token_urlsafe(32)
    answer = f"{token}.{THUMB}"
    started = time.monotonic()
    env.publisher.answer("app.test", {token: answer})
    assert acme_probe.wait_answered(env.urls, "app.test", {token: answer}, time.monotonic() + 15) == []
    took = time.monotonic() - started
    for proxy in env.proxies:
        assert proxy.get("other.test", CHALLENGE_PATH + token)[1] != answer.encode()  # not another's host
        assert proxy.get("app.test", "/x")[0] == 200  # the app's routes are untouched
    env.publisher.answer("app.test", {})
    for proxy in env.proxies:
        proxy.wait("answer withdrawn", lambda: acme_probe.answers(f"http://127.0.0.1:{proxy.http}", "app.test",
                                                                   token) != answer, timeout=15)
    print(f"challenge answered by both replicas {took:.2f} s after it was published")


def test_pebble_issues_both_replicas_serve_it_one_order(lab):
    env = lab({"app": "app.test", "other": "other.test"})
    issuer = env.issuer()
    started = time.monotonic()
    states = issuer.run_once(env.publisher.services())
    took = time.monotonic() - started
    assert states["app.test"].version == 1 and not states["app.test"].last_error, issuer.document()
    assert states["other.test"].version == 1
    assert issuer.client.orders == 2  # one order per host, no retry
    trusted = env.pebble.trust()  # pebble's root and intermediate, from its management API
    serials = set()
    for proxy in env.proxies:
        proxy.wait("HTTPS with the issued certificate", lambda: _verifies(env, proxy, "app.test", trusted), 20)
        status, serial = env.serial(proxy, "app.test", trusted)
        assert status == 200
        serials.add(serial)
    assert len(serials) == 1  # every replica serves the same certificate
    assert env.publisher.labels == {acme_labels.CERTS: "app.test:1,other.test:1"}  # the answers withdrawn
    for proxy in env.proxies:  # show --l7 and /metrics: the host's certificate, its source and expiry
        rows = {r["host"]: r for r in proxy.state()["certificates"]}
        assert rows["app.test"]["source"] == "acme" and rows["app.test"]["not_after"] == states["app.test"].not_after
        series = 'ingressmesh_l7_certificate_not_after_seconds{host="app.test",source="acme"} '
        assert _values(_metrics(proxy), series) == [states["app.test"].not_after]
    healthz, metrics, shown = _issuer_views(issuer)  # as l7 deploy --listen and show --l7 give them
    assert healthz["ok"] and healthz["acme_failing"] == []
    renewed = states["app.test"].issued_at
    assert abs(renewed - time.time()) < 120 and states["app.test"].last_error_at == 0.0
    assert _values(metrics, 'ingressmesh_l7_acme_last_renewal_timestamp_seconds{host="app.test"} ') == [renewed]
    assert "ingressmesh_l7_acme_last_error_timestamp_seconds{" not in metrics
    assert any(line.startswith("acme app.test (service app): certificate v1, expires") and "last renewal 20" in line
               for line in shown) and not any("last error" in line for line in shown)
    issuer.run_once(env.publisher.services())  # nothing is due: no new order
    restarted = env.issuer()  # the same account key in the store: the same account, found again
    restarted.client._acme()
    assert restarted.client._net.account.uri == issuer.client._net.account.uri
    assert issuer.client.orders == 2 and env.pebble.log_text().count("Added order") == 2  # as pebble saw it
    print(f"two certificates issued by pebble in {took:.2f} s")


def test_renewal_under_https_load_through_both_replicas_fails_no_request(lab):
    env = lab({"app": "app.test"})
    env.issuer().run_once(env.publisher.services())
    trusted = env.pebble.trust()
    for proxy in env.proxies:
        proxy.wait("HTTPS with the issued certificate", lambda: _verifies(env, proxy, "app.test", trusted), 20)
    first = env.serial(env.proxies[0], "app.test", trusted)[1]
    seen, failures, stop = {}, [], threading.Event()

    def load(proxy):
        for _ in range(5000):  # bounded: ~30 s at most
            if stop.is_set():
                return
            try:
                status, serial = env.serial(proxy, "app.test", trusted)
                seen.setdefault((proxy.https, serial), 0)
                seen[(proxy.https, serial)] += 1
                if status != 200:
                    failures.append(status)
            except (OSError, ssl.SSLError) as err:
                failures.append(repr(err))
            time.sleep(0.005)
    threads = [threading.Thread(target=load, args=(p,)) for p in env.proxies]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        renewing = env.issuer(policy=Policy(renew_before=10 * 365 * 86400.0))  # every certificate is due
        states = renewing.run_once(env.publisher.services())
        assert states["app.test"].version == 2, states["app.test"].last_error
        for proxy in env.proxies:
            proxy.wait("the renewed certificate", lambda: env.serial(proxy, "app.test", trusted)[1] != first, 20)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
    assert failures == []
    for proxy in env.proxies:  # every replica served the old one, then the new one
        serials = {serial for (port, serial) in seen if port == proxy.https}
        assert first in serials and len(serials) == 2, seen
    renewing.run_once(env.publisher.services())  # the next pass removes v1's secrets
    names = {n.name for n in env.secrets.iterdir()}
    assert not names & set(acme_names.cert_secrets("app.test", 1)) and set(acme_names.cert_secrets("app.test", 2)) <= names
    assert all(env.serial(p, "app.test", trusted)[0] == 200 for p in env.proxies)
    print(f"renewal under load: {sum(seen.values())} requests, 0 failed, {seen}")


def test_refused_challenge_is_named_and_the_old_certificate_stays(lab):
    env = lab({"app": "app.test", "other": "other.test"})
    env.pebble.point("other.test", "127.0.0.99")  # pebble validates where no proxy listens
    issuer = env.issuer()
    states = issuer.run_once(env.publisher.services())
    assert states["app.test"].version == 1
    bad = states["other.test"]
    assert bad.version == 0 and bad.failures == 1 and bad.next_try > time.time()
    assert "certificate for other.test: the challenge was refused" in bad.last_error, bad.last_error
    trusted = env.pebble.trust()
    for proxy in env.proxies:
        proxy.wait("app.test over HTTPS", lambda: _verifies(env, proxy, "app.test", trusted), 20)
        assert proxy.get("other.test")[0] == 200  # plain HTTP as before
    # a renewal whose challenge is refused: the host keeps serving its certificate
    before = env.serial(env.proxies[0], "app.test", trusted)
    env.pebble.point("app.test", "127.0.0.99")
    renewing = env.issuer(policy=Policy(renew_before=10 * 365 * 86400.0),  # another manager's issuer
                          account_key=derived_key_pem(TOKEN.encode(), env.pebble.directory))
    states = renewing.run_once(env.publisher.services())
    assert "certificate for app.test: the challenge was refused" in states["app.test"].last_error
    assert states["app.test"].version == 1 and states["app.test"].failures == 1
    assert "certificate for other.test: the challenge was refused" in states["other.test"].last_error
    assert renewing.client.orders == 2  # an account whose key is derived from the cluster secret, one order each
    healthz, metrics, shown = _issuer_views(renewing)  # named in /healthz, /metrics and show --l7
    assert healthz["ok"]  # failing hosts do not make l7 deploy unhealthy: app.test keeps v1
    failing = {f["host"]: f for f in healthz["acme_failing"]}
    assert failing["app.test"]["serving"] == "certificate v1" and failing["other.test"]["serving"] == "plain HTTP"
    assert "the challenge was refused" in failing["app.test"]["reason"] and failing["app.test"]["kind"] == \
        "challenge_refused"
    at = states["app.test"].last_error_at
    assert at > 0 and _values(metrics, 'ingressmesh_l7_acme_last_error_timestamp_seconds'
                              '{host="app.test",reason="challenge_refused"} ') == [at]
    assert any(line.startswith("acme app.test: last error at 20") and "the challenge was refused" in line
               for line in shown)
    assert any(line.startswith("acme app.test (service app): certificate v1") for line in shown)
    time.sleep(1.0)
    for proxy in env.proxies:
        assert env.serial(proxy, "app.test", trusted) == before


def test_unreachable_server_or_replica_is_named_and_nothing_changes(lab):
    env = lab({"app": "app.test"})
    closed = free_port()
    states = env.issuer(directory=f"https://localhost:{closed}/dir").run_once(env.publisher.services())
    assert f"ACME account at https://localhost:{closed}/dir: the ACME server is unreachable" in \
        states["app.test"].last_error
    dead = f"http://127.0.0.1:{free_port()}"
    issuer = env.issuer(probe_urls=env.urls + (dead,), propagation=3.0)
    states = issuer.run_once(env.publisher.services())
    error = states["app.test"].last_error
    assert "did not reach every proxy" in error and dead in error and "not asked to validate" in error
    healthz, metrics, shown = _issuer_views(issuer)
    assert [(f["host"], f["kind"], f["serving"]) for f in healthz["acme_failing"]] == \
        [("app.test", "challenge_not_answered", "plain HTTP")] and dead in healthz["acme_failing"][0]["reason"]
    assert 'last_error_timestamp_seconds{host="app.test",reason="challenge_not_answered"}' in metrics
    assert any(line.startswith("acme app.test: last error at") and dead in line for line in shown)
    assert env.publisher.labels == {}  # answers withdrawn
    assert all(p.get("app.test")[0] == 200 for p in env.proxies)


def _values(text: str, series: str) -> list[float]:
    """The values of the lines of a /metrics text that start with `series` (name{labels} )."""
    return [float(line[len(series):]) for line in text.splitlines() if line.startswith(series)]


def _issuer_views(issuer) -> tuple[dict, str, list[str]]:
    """(/healthz body, /metrics text, show --l7 lines) of the issuer, served by the routes
    `l7 deploy --listen` serves, over a loopback socket."""
    health = DeployHealth()
    health.passed([])
    server = HttpService(("127.0.0.1", 0), {("GET", "/healthz"): health.healthz,
                                            **acme_deploy.routes(issuer.document, health)}, None).start()
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            healthz = json.loads(response.read())
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        return healthz, metrics, acme_status.issuer_lines({}, server.url)
    finally:
        server.stop()


def _metrics(proxy) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=5)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _verifies(env, proxy, host: str, context: ssl.SSLContext) -> bool:
    try:
        return env.serial(proxy, host, context)[0] == 200
    except (ssl.SSLError, OSError):
        return False
