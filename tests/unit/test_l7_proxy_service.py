"""Proxy-service settings (Interlock's config.toml keys) and the desired service spec."""
import pytest

from ingressmesh.l7 import settings as l7_settings
from ingressmesh.l7.proxy_service import desired_spec, fingerprint, networks_needed, secrets_needed
from ingressmesh.l7.settings import SettingsError

from l7_swarm import cluster, service, task

CONFIG = """
[Extensions.default]
ProxyReplicas = 3
PublishMode = "host"
PublishedPort = 8080
ProxyConstraints = ["node.role==worker"]
ProxyUpdateDelay = "500ms"
ProxyStopGracePeriod = "1m"
Controllers = ["http://10.0.0.1:9401"]

[Extensions.blue]
ServiceCluster = "blue"
PublishedPort = 8090
"""


def test_extensions_become_proxy_services():
    default, blue = l7_settings.parse(CONFIG)
    assert (default.name, default.replicas, default.publish_mode, default.published_port, default.constraints,
            default.update_delay, default.stop_grace_period) == \
        ("ingressmesh-proxy", 3, "host", 8080, ("node.role==worker",), 0.5, 60.0)
    assert (blue.name, blue.service_cluster, blue.published_port) == ("ingressmesh-proxy-blue", "blue", 8090)


@pytest.mark.parametrize("text,culprit", [
    ("[Extensions.default]\nPublishedPort = 99999\n", "Extensions.default.PublishedPort"),
    ("[Extensions.default]\nPublishMode = 'bridge'\n", "Extensions.default.PublishMode"),
    ("[Extensions.default]\nProxyReplicas = '2'\n", "Extensions.default.ProxyReplicas"),
    ("[Extensions.default]\nProxyConstraints = ['node.role==worker; rm -rf']\n", "Extensions.default.ProxyConstraints"),
    ("[Extensions.default]\nProxyImage = 'a b'\n", "Extensions.default.ProxyImage"),
    ("[Extensions.default]\nColour = 'red'\n", "Extensions.default.Colour: unknown key"),
    ("[Extensions.a]\n[Extensions.b]\n", "same ProxyServiceName or ServiceCluster"),
    ("[Extensions.default\n", "not valid TOML"),
    ("", "at least one [Extensions"),
])
def test_bad_settings_name_the_key(text, culprit):
    with pytest.raises(SettingsError, match=culprit.replace("[", r"\[").replace(".", r"\.")):
        l7_settings.parse(text)


def test_the_spec_attaches_the_networks_labelled_services_need_and_updates_start_first():
    default, blue = l7_settings.parse(CONFIG)
    c = cluster([service("a", {"hosts": "a.com", "port": "80"}),
                 service("b", {"hosts": "b.com", "port": "80", "network": "other"}),
                 service("c", {"hosts": "c.com", "port": "80", "service_cluster": "blue"}),
                 service("bad", {"hosts": "x;y", "port": "80", "network": "other"})],
                [task("a1", "a", 2), task("b1", "b", 3, network="othernet"), task("c1", "c", 4)])
    assert [n.name for n in networks_needed(c, default)] == ["app", "other"]
    assert [n.name for n in networks_needed(c, blue)] == ["app"]
    spec = desired_spec(default, c, ("sec-id", "ingressmesh_token_x"), default.controllers)
    assert [n["Target"] for n in spec["TaskTemplate"]["Networks"]] == ["appnet", "othernet"]
    assert spec["UpdateConfig"]["Order"] == "start-first"
    assert spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080,
                                              "PublishMode": "host"}]
    command = spec["TaskTemplate"]["ContainerSpec"]["Command"]
    assert command[:2] == ["ingressmesh", "proxy"] and "http://10.0.0.1:9401" in command
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==worker"]
    same = desired_spec(default, c, ("sec-id", "ingressmesh_token_x"), default.controllers)
    assert fingerprint(spec) == fingerprint(same)
    fewer = cluster([service("a", {"hosts": "a.com", "port": "80"})], [task("a1", "a", 2)])
    assert fingerprint(desired_spec(default, fewer, ("sec-id", "n"), ())) != fingerprint(spec)


def test_a_controller_ca_secret_is_mounted_and_passed_to_the_proxies():
    (with_ca,) = l7_settings.parse('[Extensions.default]\nControllerCASecret = "ingressmesh_ca"\n'
                                   'Controllers = ["https://10.0.0.1:9401"]\n')
    assert with_ca.ca_secret == "ingressmesh_ca"
    c = cluster([service("a", {"hosts": "a.com", "port": "80"})], [task("a1", "a", 2)])
    spec = desired_spec(with_ca, c, ("tok-id", "ingressmesh_token_x"), with_ca.controllers, ("ca-id", "ingressmesh_ca"))
    command = spec["TaskTemplate"]["ContainerSpec"]["Command"]
    assert command[command.index("--ca") + 1] == "/run/secrets/ingressmesh_controller_ca"
    secrets = spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert [(s["SecretID"], s["File"]["Name"]) for s in secrets] == [
        ("tok-id", "ingressmesh_token"), ("ca-id", "ingressmesh_controller_ca")]
    with pytest.raises(SettingsError, match="ControllerCASecret"):
        l7_settings.parse('[Extensions.default]\nControllerCASecret = "bad name"\n')


def test_https_port_and_the_secrets_labelled_services_name():
    (item,) = l7_settings.parse('[Extensions.default]\nPublishedPort = 8080\nPublishedSSLPort = 8443\n')
    c = cluster([service("a", {"hosts": "a.com", "port": "80", "ssl_cert": "a_cert", "ssl_key": "a_key"}),
                 service("b", {"hosts": "b.com", "port": "80", "ssl_cert": "ingressmesh_token", "ssl_key": "b_key"}),
                 service("c", {"hosts": "c.com", "port": "80", "service_cluster": "other", "ssl_cert": "c", "ssl_key": "k"})],
                [task("a1", "a", 2), task("b1", "b", 3), task("c1", "c", 4)])
    # b names an ingressmesh credential: refused by its labels, so none of its secrets is needed
    assert secrets_needed(c, item) == ["a_cert", "a_key"]
    spec = desired_spec(item, c, ("tok", "ingressmesh_token_x"), (),
                        label_secrets=(("id1", "a_cert"), ("id2", "a_key"), ("id3", "ingressmesh_token")))
    files = [s["File"]["Name"] for s in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]]
    assert files == ["ingressmesh_token", "a_cert", "a_key"]  # a label never shadows the token file
    assert [(p["TargetPort"], p["PublishedPort"]) for p in spec["EndpointSpec"]["Ports"]] == [(80, 8080), (443, 8443)]
    command = spec["TaskTemplate"]["ContainerSpec"]["Command"]
    assert command[command.index("--https-port") + 1] == "443"
    assert command[command.index("--https-redirect-port") + 1] == "8443"


def test_the_stop_linger_and_timeout_fit_the_stop_grace_period_before_swarm_kills():
    from ingressmesh.l7.proxy_service import stop_times
    assert stop_times(30) == (2.0, 10.0, 17.0)  # the default grace: 2-10 s serving, 17 s draining, 3 s spare
    assert stop_times(10) == (2.0, 3.5, 3.5)
    assert stop_times(6) == (1.5, 1.5, 1.5)  # a short grace shortens the minimum linger too
    for grace in (5, 6, 7, 8, 9, 10, 15, 30, 60, 600):
        linger, linger_max, timeout = stop_times(grace)
        assert 0 < linger <= 2 and linger <= linger_max <= 10 and timeout >= 1
        assert linger_max + timeout + 3 <= grace, grace
    assert stop_times(0) == (0.0, 0.0, 1.0)
    (short,) = l7_settings.parse('[Extensions.default]\nProxyStopGracePeriod = "10s"\nControllers = ["http://10.0.0.1:9401"]\n')
    c = cluster([service("a", {"hosts": "a.com", "port": "80"})], [task("a1", "a", 2)])
    command = desired_spec(short, c, ("sec-id", "n"), short.controllers)["TaskTemplate"]["ContainerSpec"]["Command"]
    assert command[command.index("--stop-linger") + 1] == "2"
    assert command[command.index("--stop-linger-max") + 1] == "3.5"
    assert command[command.index("--stop-timeout") + 1] == "3.5"
