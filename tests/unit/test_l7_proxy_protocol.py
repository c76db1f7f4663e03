"""The client's address through the L7 proxies (issue 21): io.ingressmesh.lb.proxy_protocol
(PROXY v2 to the tasks), l7.toml's AcceptProxyProtocol (PROXY headers on the published ports)
and SourceIP (the proxy service's io.ingressmesh.lb.source_ip): parsed, refused by name, rendered."""
import pytest

from ingressmesh.l7 import labels, slots
from ingressmesh.l7 import settings as l7_settings
from ingressmesh.l7.grammar import LabelError
from ingressmesh.l7.proxy_service import desired_spec, fingerprint
from ingressmesh.l7.render import ProxySettings, render_config
from ingressmesh.l7.routes import plan_routes
from ingressmesh.l7.settings import SettingsError
from ingressmesh.plan import PlanOptions
from ingressmesh.plan_source_ip import SOURCE_IP_LABEL, source_ip_of
from ingressmesh import snapshot

from l7_swarm import NOW, cluster, service, task

PP = labels.PROXY_PROTOCOL_LABEL


def with_pp(name: str, value, **found) -> dict:
    svc = service(name, {"hosts": f"{name}.com", "port": "80", **found})
    if value is not None:
        svc["labels"][PP] = value
    return svc


def plan(*services, tasks=()):
    return plan_routes(cluster(list(services), list(tasks)), options=PlanOptions(now=NOW))


def config(table, settings=ProxySettings()) -> str:
    return render_config(table, slots.assign({}, table), settings)


def backend_lines(text: str, backend: str) -> list[str]:
    section = text.split(f"backend {backend}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


@pytest.mark.parametrize("value,expected", [("true", True), ("1", True), (" Yes ", True), ("false", False),
                                            ("no", False), ("0", False)])
def test_the_label_is_a_boolean(value, expected):
    assert labels.parse(with_pp("a", value)["labels"]).proxy_protocol is expected


def test_without_the_label_no_proxy_protocol():
    assert labels.parse(with_pp("a", None)["labels"]).proxy_protocol is False


@pytest.mark.parametrize("bad", ["v2", "2", "true\nserver evil 1.2.3.4:80", "true send-proxy", "", "ja", "x" * 2000,
                                 "tru\u00e9"])
def test_hostile_values_are_refused_by_name(bad):
    with pytest.raises(LabelError) as err:
        labels.parse(with_pp("a", bad)["labels"])
    assert err.value.label == PP and str(err.value).startswith(f"label {PP}=")
    assert "\n" not in str(err.value)


def test_a_refused_service_is_named_and_the_others_stay():
    table = plan(with_pp("bad", "yes please"), with_pp("good", "true"),
                 tasks=[task("b1", "bad", 2), task("g1", "good", 3)])
    assert [(r.service, PP in r.reason) for r in table.refused] == [("bad", True)]
    assert [b.name for b in table.backends] == ["be:good"] and table.backends[0].proxy_protocol


def test_every_slot_of_a_labelled_backend_sends_proxy_v2_and_no_other_does():
    table = plan(with_pp("pp", "true"), with_pp("plain", None), with_pp("iph", "true", ip_hash="true"),
                 tasks=[task("p1", "pp", 2), task("q1", "plain", 3), task("i1", "iph", 4)])
    text = config(table)
    pp = [line for line in backend_lines(text, "be:pp") if line.startswith("server ")]
    assert len(pp) == slots.BLOCK and all(line.endswith(" send-proxy-v2") for line in pp)  # free slots too
    assert pp[0] == "server s1 10.0.1.2:80 weight 1 send-proxy-v2"
    assert "send-proxy" not in "\n".join(backend_lines(text, "be:plain"))
    assert "balance source" in backend_lines(text, "be:iph")
    # A change of the label changes the backend's shape: a reload, never a runtime move.
    off = plan(with_pp("pp", "false"), tasks=[task("p1", "pp", 2)])
    assert off.backend("be:pp").shape() != table.backend("be:pp").shape()


def test_with_tls_to_the_tasks_the_header_comes_first():
    table = plan(with_pp("s", "true", ssl_backend="true", ssl_backend_tls_verify="none"), tasks=[task("s1", "s", 2)])
    line = next(line for line in backend_lines(config(table), "be:s") if line.startswith("server s1 "))
    assert line == "server s1 10.0.1.2:80 weight 1 send-proxy-v2 ssl verify none sni var(txn.host)"


def test_claimants_of_one_route_must_agree():
    older, newer = with_pp("a", "true"), with_pp("b", None)
    newer["labels"]["com.docker.lb.hosts"] = "a.com"
    older["created"], newer["created"] = 1.0, 2.0
    table = plan(older, newer, tasks=[task("a1", "a", 2), task("b1", "b", 3)])
    (refusal,) = table.refused
    assert refusal.service == "b" and "proxy_protocol=false differs from proxy_protocol=true" in refusal.reason


def test_accept_proxy_puts_accept_proxy_on_the_public_binds_only():
    table = plan(with_pp("a", None), tasks=[task("a1", "a", 2)])
    plain = config(table)
    assert "accept-proxy" not in plain
    text = config(table, ProxySettings(accept_proxy=True))
    assert "frontend http\n    bind 0.0.0.0:80 accept-proxy\n" in text
    assert "frontend stats\n    bind 0.0.0.0:8405\n" in text


def test_l7_toml_source_ip_and_accept_proxy_protocol_reach_the_spec():
    (item,) = l7_settings.parse('[Extensions.default]\nSourceIP = "preserve"\nAcceptProxyProtocol = true\n')
    assert (item.source_ip, item.accept_proxy) == ("preserve", True)
    c = cluster([service("a", {"hosts": "a.com", "port": "80"})], [task("a1", "a", 2)])
    spec = desired_spec(item, c, ("tok-id", "ingressmesh_token_x"), ())
    assert spec["Labels"][SOURCE_IP_LABEL] == "preserve"
    assert "--accept-proxy-protocol" in spec["TaskTemplate"]["ContainerSpec"]["Command"]
    # The L4 planner reads the label off the proxy service like off any other service.
    proxy = snapshot.from_dict({"services": [{"id": "p", "name": "ingressmesh-proxy", "labels": spec["Labels"]}]})
    assert source_ip_of(proxy.services[0]) == (True, ())
    (plain,) = l7_settings.parse("[Extensions.default]\n")
    plain_spec = desired_spec(plain, c, ("tok-id", "ingressmesh_token_x"), ())
    assert SOURCE_IP_LABEL not in plain_spec["Labels"]
    assert "--accept-proxy-protocol" not in plain_spec["TaskTemplate"]["ContainerSpec"]["Command"]
    assert fingerprint(plain_spec) != fingerprint(spec)


@pytest.mark.parametrize("text,culprit", [
    ('SourceIP = "keep"', "Extensions.default.SourceIP"),
    ("SourceIP = true", "Extensions.default.SourceIP"),
    ('AcceptProxyProtocol = "yes"', "Extensions.default.AcceptProxyProtocol"),
    ("AcceptProxyProtocol = 1", "Extensions.default.AcceptProxyProtocol"),
])
def test_bad_settings_are_refused_by_key(text, culprit):
    with pytest.raises(SettingsError, match=culprit.replace(".", r"\.")):
        l7_settings.parse(f"[Extensions.default]\n{text}\n")


def test_accept_proxy_on_the_https_port_with_passthrough_hosts():
    table = plan(with_pp("p", None, ssl_passthrough="true"), tasks=[task("p1", "p", 2)])
    text = config(table, ProxySettings(https_port=8443, accept_proxy=True))
    assert "frontend https\n    mode tcp\n    bind 0.0.0.0:8443 accept-proxy\n" in text
