"""Redirects act only on their source's scheme, never on their own target, and one label names
each source once (review of issue 19: the HTTPS loop, last-wins duplicates)."""
from dataclasses import replace

import pytest

from ingressmesh.l7 import labels, slots
from ingressmesh.l7.grammar import LabelError
from ingressmesh.l7.render import ProxySettings, render_config
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions

from l7_swarm import NOW, cluster, service, task

TLS = {"ssl_cert": "a.cert", "ssl_key": "a.key"}


def parse(redirects: str, hosts: str = "a.com,b.com"):
    return labels.parse({"com.docker.lb.hosts": hosts, "com.docker.lb.port": "80",
                         "com.docker.lb.redirects": redirects})


def frontends(text: str) -> dict[str, str]:
    """frontend name -> its body."""
    found, name = {}, None
    for line in text.splitlines():
        if line.startswith(("frontend ", "backend ")):
            name = line.split()[1] if line.startswith("frontend ") else None
            found[name] = ""
        elif name:
            found[name] += line + "\n"
    return found


def test_a_redirect_is_rendered_only_in_the_frontend_of_its_source_scheme():
    table = plan_routes(cluster([service("a", {"hosts": "a.com,b.com", "port": "80", **TLS,
                                               "redirects": "http://a.com,https://a.com;https://b.com,https://c.com"})],
                                [task("a1", "a", 2)]), options=PlanOptions(now=NOW))
    assert [(r.scheme, r.source_host, r.target) for r in table.redirects] == [
        ("http", "a.com", "https://a.com"), ("https", "b.com", "https://c.com")]
    table = replace(table, tls_hosts=tuple(replace(t, pem=f"/w/{t.host}.pem") for t in table.tls_hosts))
    text = render_config(table, slots.assign({}, table), ProxySettings(https_port=8443))
    http, https = frontends(text)["http"], frontends(text)["https"]
    assert "redirect prefix https://a.com code 302 if { var(txn.host) -m str a.com }" in http
    assert "redirect prefix https://a.com " not in https  # would answer its own target, forever
    assert "redirect prefix https://c.com code 302 if { var(txn.host) -m str b.com }" in https
    assert "https://c.com" not in http


@pytest.mark.parametrize("pair", ["http://a.com,http://a.com", "https://a.com,https://a.com/new",
                                  "https://a.com,https://a.com:443", "http://a.com:8080,http://a.com:80/x"])
def test_a_redirect_to_itself_is_refused(pair):
    with pytest.raises(LabelError, match="to itself"):
        parse(pair)


@pytest.mark.parametrize("pair", ["http://a.com,https://a.com", "https://a.com,http://a.com",
                                  "http://a.com,http://a.com:8080", "http://a.com,http://b.com"])
def test_a_redirect_to_another_scheme_port_or_host_is_kept(pair):
    assert len(parse(pair).redirects) == 1


def test_a_source_named_twice_in_one_label_is_refused_naming_it():
    with pytest.raises(LabelError) as err:
        parse("http://a.com,http://x.com;http://b.com,http://y.com;http://a.com,http://z.com")
    assert "source host 'a.com' is redirected twice" in str(err.value)
    assert err.value.label == "com.docker.lb.redirects"
    both = parse("http://a.com,https://a.com;https://a.com,https://z.com").redirects  # one per scheme
    assert [(r.scheme, r.target) for r in both] == [("http", "https://a.com"), ("https", "https://z.com")]
