"""Which services get automatic certificates, the versioned secret names, and what the planner
and the renderer make of the issuer's labels (challenges, ACME TLS hosts)."""
from __future__ import annotations

import pytest

from ingressmesh.l7 import acme_labels, acme_names
from ingressmesh.l7.acme_routes import Challenge
from ingressmesh.l7.grammar import LabelError
from ingressmesh.l7.render import ProxySettings, request_rules
from ingressmesh.l7.routes import ProxyScope, plan_routes
from ingressmesh.plan import PlanOptions
from l7_swarm import NOW, cluster, service, task

THUMB = "A" * 43
TOKEN = "tok_" + "x" * 20


def acme_service(name: str, lb: dict, **extra) -> dict:
    found = service(name, {"port": "80", **lb})
    found["labels"].update({"io.ingressmesh.lb.acme": "true", **extra})
    return found


def proxy(**issuer_labels) -> dict:
    """The proxy's own service, carrying the issuer's labels (l7 deploy writes them there)."""
    return {"id": "proxy", "name": "proxy", "labels": {"io.ingressmesh.l7.proxy": "default", **issuer_labels}}


def table(*services, tasks=None, issuer: dict = None):
    tasks = tasks if tasks is not None else [task(f"{s['name']}1", s["name"], i + 2) for i, s in enumerate(services)]
    return plan_routes(cluster([*services, proxy(**(issuer or {}))], tasks), ProxyScope(proxy_service="proxy"),
                       options=PlanOptions(now=NOW))


def http01(host: str) -> dict:
    return {acme_labels.http01_label(host): f"{TOKEN}.{THUMB}"}


def test_requests_ssl_cert_wins_passthrough_needs_none_hosts_needed():
    c = cluster([acme_service("a", {"hosts": "a.com,www.a.com"}),
                 acme_service("own", {"hosts": "own.com", "ssl_cert": "c", "ssl_key": "k"}),
                 acme_service("pass", {"hosts": "p.com", "ssl_passthrough": "true"}),
                 acme_service("bad", {"hosts": "bad.com"}) | {"labels": {"io.ingressmesh.lb.acme": "maybe",
                                                                         "com.docker.lb.hosts": "bad.com",
                                                                         "com.docker.lb.port": "80"}},
                 acme_service("off", {"hosts": "off.com"}) | {"labels": {"io.ingressmesh.lb.acme": "false"}},
                 service("plain", {"hosts": "plain.com", "port": "80"})], [])
    found = {r.service: r for r in acme_labels.requests(c.services)}
    assert set(found) == {"a", "own", "pass", "bad"}
    assert found["a"].hosts == ("a.com", "www.a.com") and not found["a"].reason
    assert "ssl_cert/ssl_key win" in found["own"].reason and "ssl_passthrough" in found["pass"].reason
    assert "io.ingressmesh.lb.acme" in found["bad"].reason and "true or false" in found["bad"].reason


def test_issuer_labels_round_trip_and_refusals():
    assert acme_labels.parse_certs(acme_labels.format_certs({"b.com": 2, "a.com": 1})) == {"a.com": 1, "b.com": 2}
    answers = acme_labels.parse_http01(acme_labels.format_http01([f"{TOKEN}.{THUMB}"]))
    assert answers == {TOKEN: f"{TOKEN}.{THUMB}"}
    for bad in ("a.com:x", "a.com", "a b:1"):
        with pytest.raises(LabelError):
            acme_labels.parse_certs(bad)
    for bad in ("short.AAA", f"{TOKEN}", f"{TOKEN}.{THUMB}\"; x"):
        with pytest.raises(LabelError):
            acme_labels.parse_http01(bad)


def test_secret_names_are_versioned_docker_names_and_old_ones_go():
    crt, key = acme_names.cert_secrets("WWW.Example.org", 3)
    assert crt.endswith(".v3.crt") and key.endswith(".v3.key") and crt.startswith("acme.www-example-org.")
    long_host = "a" * 60 + ".example.org"
    for name in acme_names.cert_secrets(long_host, 123456) + (acme_names.account_secret("https://x/d", 1),):
        assert len(name) <= 64 and not name.startswith("ingressmesh")
        assert acme_names.parse(name) is not None
    a1, a2, b1 = (*acme_names.cert_secrets("a.com", 1), *acme_names.cert_secrets("a.com", 2)), \
        acme_names.cert_secrets("a.com", 2), acme_names.cert_secrets("b.com", 1)
    account = acme_names.account_secret("https://x/d", 1)
    names = [*a1, *b1, account, "someone_elses_secret"]
    # a.com moved to v2: v1 goes; b.com no longer asks: all of it goes; the account and others stay
    assert acme_names.obsolete(names, {"a.com": 2}) == sorted([*a1[:2], *b1])
    assert acme_names.obsolete(names, {"a.com": 1, "b.com": 1}) == []
    assert a2[0] not in acme_names.obsolete([*a2], {"a.com": 1})  # a newer version is never removed


def test_challenges_only_for_the_hosts_the_service_serves():
    senior = service("senior", {"hosts": "taken.com", "port": "80"})
    senior["created"] = 1.0
    thief = acme_service("thief", {"hosts": "taken.com,mine.com"})
    thief["created"] = 2.0
    found = table(senior, thief, issuer={**http01("taken.com"), **http01("mine.com"), **http01("nobody.com")})
    assert found.challenges == (Challenge(TOKEN, f"{TOKEN}.{THUMB}", ("mine.com",), "thief"),)
    rules = "\n".join(request_rules(found, ProxySettings(), "http"))
    assert (f'http-request return status 200 content-type text/plain string "{TOKEN}.{THUMB}" '
            f"if {{ path /.well-known/acme-challenge/{TOKEN} }} {{ var(txn.host) -m str mine.com }}") in rules
    assert "acme-challenge" not in "\n".join(request_rules(found, ProxySettings(), "https"))


def test_challenge_comes_before_the_https_redirect():
    own = acme_service("a", {"hosts": "a.com", "ssl_only": "true", "ssl_cert": "c", "ssl_key": "k"})
    rules = request_rules(table(own, issuer=http01("a.com")), ProxySettings(https_port=443), "http")
    answer = next(i for i, line in enumerate(rules) if "acme-challenge" in line)
    redirect = next(i for i, line in enumerate(rules) if "redirect" in line)
    assert answer < redirect


def test_acme_certificate_becomes_a_tls_host_unless_the_service_names_its_own():
    found = table(acme_service("a", {"hosts": "a.com,b.com"}), issuer={acme_labels.CERTS: "a.com:2,other.com:1"})
    assert [(t.host, t.cert, t.key, t.acme) for t in found.tls_hosts] == [
        ("a.com", *acme_names.cert_secrets("a.com", 2), True)]  # b.com: none yet; other.com: not served
    assert found.routes and not found.refused


def test_a_malformed_issuer_label_is_a_note_and_the_routes_stay():
    found = table(acme_service("a", {"hosts": "a.com"}), issuer={acme_labels.CERTS: "a.com:zero"})
    assert [r.host for r in found.routes] == ["a.com"] and not found.tls_hosts and not found.refused
    assert any("proxy service proxy: " in n and "io.ingressmesh.lb.acme.certs" in n for n in found.notes)


def test_issuer_labels_count_only_on_the_proxy_service():
    """A user's service carrying the issuer's labels gets no challenge answered, no certificate."""
    forged = acme_service("a", {"hosts": "a.com"}, **{acme_labels.CERTS: "a.com:1", **http01("a.com")})
    found = table(forged)
    assert not found.challenges and not found.tls_hosts
    found = table(acme_service("a", {"hosts": "a.com"}), issuer={acme_labels.CERTS: "a.com:1", **http01("a.com")})
    assert [c.hosts for c in found.challenges] == [("a.com",)] and [t.host for t in found.tls_hosts] == ["a.com"]
    # no proxy service in the snapshot (a proxy without --proxy-service): nothing is trusted
    c = cluster([forged, proxy(**{acme_labels.CERTS: "a.com:1"})], [task("a1", "a", 2)])
    assert not plan_routes(c, options=PlanOptions(now=NOW)).tls_hosts


def test_a_change_of_challenges_changes_the_shape():
    before = table(acme_service("a", {"hosts": "a.com"}))
    after = table(acme_service("a", {"hosts": "a.com"}), issuer=http01("a.com"))
    assert before.shape() != after.shape() and before.map_entries() == after.map_entries()


def test_l7_deploy_mounts_the_acme_secrets_of_the_services_own_hosts():
    from ingressmesh.l7.proxy_service import secret_claims
    from ingressmesh.l7.settings import ProxyServiceSettings
    c = cluster([acme_service("a", {"hosts": "a.com,b.com"}),
                 acme_service("own", {"hosts": "own.com", "ssl_cert": "c", "ssl_key": "k"})], [])
    claims = secret_claims(c, ProxyServiceSettings(), "a.com:2,b.com:1,x.com:1,own.com:1")
    assert not [n for n in secret_claims(c, ProxyServiceSettings(), "bad.com:zero") if n.startswith("acme.")]
    wanted = [*acme_names.cert_secrets("a.com", 2), *acme_names.cert_secrets("b.com", 1)]
    assert {n: s for n, s in claims.items() if n.startswith("acme.")} == {n: ("a",) for n in wanted}
    assert claims["c"] == ("own",) and claims["k"] == ("own",)  # ssl_cert/ssl_key win: no ACME secret
