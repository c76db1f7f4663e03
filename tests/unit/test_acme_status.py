"""Issue 23's status point: the issuer records, per host, its last renewal and its last error
(with when it happened); `show --l7` prints them, `l7 deploy`'s /metrics exports them with a
bounded `reason`, and its /healthz names a failing host without turning unhealthy.  The HTTP
side is asked over real loopback sockets (the routes `l7 deploy --listen` serves)."""
from __future__ import annotations

import json
import urllib.request

from ingressmesh.daemon.http import HttpService
from ingressmesh.l7 import acme_status
from ingressmesh.l7.acme_deploy import routes
from ingressmesh.l7.deploy_health import DeployHealth
from ingressmesh.l7.metrics import IssuerMetrics

from test_acme_issuer import LabelPublisher, StubClient, issuer, services

WANTED = {"good": "good.com", "bad": "bad.com"}


def test_the_issuer_records_last_renewal_and_last_error_with_its_time(tmp_path):
    publisher, clock = LabelPublisher(), [1000.0]
    client = StubClient(refuse={"bad.com"})
    one = issuer(tmp_path, client, publisher, clock)
    one.run_once(services(publisher, WANTED))
    rows = {r["host"]: r for r in one.document()}
    assert rows["good.com"]["issued_at"] == 1000.0 and rows["good.com"]["last_error"] == ""
    assert rows["good.com"]["last_error_at"] == 0.0
    assert rows["bad.com"]["issued_at"] == 0.0 and rows["bad.com"]["last_error_at"] == 1000.0
    assert "challenge was refused" in rows["bad.com"]["last_error"]
    client.refuse.clear()  # the next try succeeds: the error is cleared, the renewal recorded
    clock[0] = 1100.0
    rows = {r["host"]: r for r in (one.run_once(services(publisher, WANTED)), one.document())[1]}
    assert rows["bad.com"]["issued_at"] == 1100.0 and rows["bad.com"]["last_error"] == ""
    assert rows["bad.com"]["last_error_at"] == 0.0 and rows["good.com"]["issued_at"] == 1000.0
    # a restarted issuer: the last renewal is when the served version's secret was written
    two = issuer(tmp_path, client, publisher, clock)
    two.run_once(services(publisher, WANTED))
    again = {r["host"]: r for r in two.document()}
    written = two.store.created(two.store.names()[-1])
    assert again["good.com"]["issued_at"] > 0 and abs(again["good.com"]["issued_at"] - written) < 60
    assert len(client.orders) == 3  # no order from the restarted issuer


def _rows():
    return [{"host": "good.com", "service": "web", "source": "acme", "version": 2, "not_after": 1.9e9,
             "issued_at": 1.8e9, "last_error": "", "last_error_at": 0.0, "failures": 0, "next_try": 0.0},
            {"host": "bad.com", "service": "api", "source": "acme", "version": 0, "not_after": 0.0,
             "issued_at": 0.0, "last_error": "certificate for bad.com: the challenge was refused: 404",
             "last_error_at": 1.8e9 + 60, "failures": 2, "next_try": 1.8e9 + 180}]


def test_show_lines_name_renewal_error_and_what_is_served():
    text = "\n".join(acme_status.lines(_rows()))
    assert "acme good.com (service web): certificate v2, expires 2030-03-17 17:46:40 UTC, last renewal " \
           "2027-01-15 08:00:00 UTC" in text
    assert "acme bad.com (service api): plain HTTP, expires -, last renewal never" in text
    assert "acme bad.com: last error at 2027-01-15 08:01:00 UTC: certificate for bad.com: the challenge was " \
           "refused: 404 (next try 2027-01-15 08:03:00 UTC)" in text
    assert "good.com: last error" not in text


def test_error_kinds_are_bounded():
    assert acme_status.error_kind("ACME account at https://x/dir: the ACME server is unreachable (X)") == "unreachable"
    assert acme_status.error_kind("... did not reach every proxy within 30 s ...") == "challenge_not_answered"
    assert acme_status.error_kind("too many (rateLimited)") == "rate_limited"
    assert acme_status.error_kind('host "}\n{evil') == "other"


def test_metrics_export_per_host_with_a_bounded_reason_and_a_host_cap():
    text = IssuerMetrics().observe(_rows()).render()[1].decode()
    assert 'ingressmesh_l7_acme_last_renewal_timestamp_seconds{host="good.com"} 1.8e+09' in text
    assert 'ingressmesh_l7_acme_last_error_timestamp_seconds{host="bad.com",reason="challenge_refused"} ' \
           '1.80000006e+09' in text
    assert 'ingressmesh_l7_acme_not_after_seconds{host="good.com"} 1.9e+09' in text
    assert 'ingressmesh_l7_acme_consecutive_failures{host="bad.com"} 2.0' in text
    assert 'last_renewal_timestamp_seconds{host="bad.com"}' not in text  # never renewed: no series
    assert 'last_error_timestamp_seconds{host="good.com"' not in text
    many = [dict(_rows()[1], host=f"h{i}.com") for i in range(acme_status.MAX_HOSTS + 5)]
    text = IssuerMetrics().observe(many).render()[1].decode()
    assert text.count("ingressmesh_l7_acme_last_error_timestamp_seconds{") == acme_status.MAX_HOSTS
    assert f"ingressmesh_l7_acme_hosts {acme_status.MAX_HOSTS + 5}.0" in text


def test_l7_deploy_names_a_failing_host_on_healthz_and_stays_healthy():
    health = DeployHealth()
    health.passed([])
    server = HttpService(("127.0.0.1", 0), {("GET", "/healthz"): health.healthz,
                                            **routes(_rows, health, lambda: "standing by (lease held by m2.7.ab)")},
                         None).start()
    try:
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            status, body = response.status, json.loads(response.read())
        assert status == 200 and body["ok"] is True
        (failing,) = body["acme_failing"]
        assert failing["host"] == "bad.com" and "challenge was refused" in failing["reason"]
        assert failing["kind"] == "challenge_refused" and failing["serving"] == "plain HTTP"
        assert failing["at"] == "2027-01-15 08:01:00 UTC"
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            assert 'reason="challenge_refused"' in response.read().decode()
        shown = acme_status.issuer_lines({}, server.url)  # show --l7 --acme-issuer <url>
        assert any(line.startswith("acme bad.com: last error at") for line in shown)
        assert shown[0] == "ACME issuer: standing by (lease held by m2.7.ab)"  # which l7 deploy issues
    finally:
        server.stop()
    closed = server.url  # stopped: nothing answers there
    assert acme_status.issuer_lines({}, closed)[0].startswith(f"ACME issuer: {closed}/acme: ")


def test_a_docker_secrets_creation_is_the_last_renewal_after_a_restart():
    """On a swarm the store is Docker's secrets: their CreatedAt (nanoseconds, RFC 3339)."""
    from ingressmesh.l7.acme_names import cert_secrets
    from ingressmesh.l7.acme_swarm import DockerSecretStore
    cert = cert_secrets("good.com", 3)[0]

    class Secrets:  # what `docker secret ls` gives (the API's list)
        def secrets(self, filters=None):
            return [{"ID": "s1", "CreatedAt": "2027-01-15T08:00:00.123456789Z", "Spec": {"Name": cert, "Labels": {}}}]
    store = DockerSecretStore(Secrets())
    assert abs(store.created(cert) - 1.8e9 - 0.123456) < 1e-5
    assert store.created(cert_secrets("good.com", 4)[0]) == 0.0  # not there: unknown
