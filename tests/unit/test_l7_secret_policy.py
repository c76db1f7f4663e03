"""Which secrets labels may hand to the proxies (issue 19.5): the policy, and `l7 deploy`'s pass
against a recording Docker API - a refused secret is never in any service create or update."""
import pytest

from ingressmesh.l7 import settings as l7_settings
from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import ProxyServices
from ingressmesh.l7.routes import plan_routes
from ingressmesh.l7.secret_policy import decide, why_not
from ingressmesh.l7.settings import ProxyServiceSettings, SettingsError
from ingressmesh.plan import PlanOptions

from l7_swarm import NOW, cluster, service, task

ALLOW = {"io.ingressmesh.l7.secret": "true"}


class RecordingDocker:
    """The calls ProxyServices makes, recorded; secrets and services kept like a manager would."""

    def __init__(self, secrets: dict):
        self.secret_list = [{"ID": f"id-{name}", "Spec": {"Name": name, "Labels": labels}}
                            for name, labels in secrets.items()]
        self.service_list, self.calls = [], []

    def secrets(self, filters=None):
        name = (filters or {}).get("name")
        return [s for s in self.secret_list if name is None or name in s["Spec"]["Name"]]

    def create_secret(self, name, data, labels=None):
        self.calls.append(("create_secret", name))
        self.secret_list.append({"ID": f"id-{name}", "Spec": {"Name": name, "Labels": labels or {}}})
        return {"ID": f"id-{name}"}

    def services(self, filters=None):
        return [s for s in self.service_list if s["Spec"]["Name"] == (filters or {}).get("name")]

    def create_service(self, **spec):
        self.calls.append(("create_service", spec))
        self.service_list.append({"ID": "svc", "Version": {"Index": 1}, "Spec": {"Name": spec["name"],
                                                                                 "Labels": spec["labels"]}})

    def update_service(self, service_id, version, **spec):
        self.calls.append(("update_service", spec))
        self.service_list[0]["Spec"]["Labels"] = spec["labels"]

    def mounted(self) -> list[list[str]]:
        """The secret names of every service create/update, in order."""
        return [[s["SecretName"] for s in spec["task_template"]["ContainerSpec"]["Secrets"]]
                for kind, spec in self.calls if kind != "create_secret"]


def tls(cert: str, key: str, **more) -> dict:
    return {"ssl_cert": cert, "ssl_key": key, **more}


HOSTILE = [service("bank", {"hosts": "bank.com", "port": "80", **tls("bank.cert", "bank.key")}),
           service("steal", {"hosts": "steal.com", "port": "80", **tls("app_db_password", "app_db_password")}),
           service("demo_app", {"hosts": "demo.local", "port": "80", **tls("demo_demo.local.cert", "demo_demo.local.key")})]
TASKS = [task("b1", "bank", 2), task("s1", "steal", 3), task("d1", "demo_app", 4)]
SECRETS = {"bank.cert": ALLOW, "bank.key": ALLOW,                 # labelled by whoever created them
           "app_db_password": {},                                  # an unrelated application secret
           "demo_demo.local.cert": {"com.docker.stack.namespace": "demo"},  # Interlock's stack example
           "demo_demo.local.key": {"com.docker.stack.namespace": "demo"},
           "ingressmesh_secret": ALLOW,                            # the cluster secret, even labelled
           "mesh_controller_key": {"com.docker.stack.namespace": "mesh"}}


def test_the_deployer_mounts_only_allowed_secrets_and_names_the_others_before_any_update():
    (item,) = l7_settings.parse('[Extensions.default]\nPublishedSSLPort = 8443\nProxySecrets = ["demo_*"]\n')
    api = RecordingDocker(SECRETS)
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (item,), cluster(HOSTILE, TASKS), ("http://c:9401",), "mesh")
    assert done.outcome == "created"
    assert done.mounted == ("bank.cert", "bank.key", "demo_demo.local.cert", "demo_demo.local.key")
    assert [(r.secret, r.services) for r in done.refused] == [("app_db_password", ("steal",))]
    assert "not allowed: list it in ProxySecrets" in done.refused[0].reason
    assert "io.ingressmesh.l7.secret=true" in done.refused[0].line()
    (first,) = api.mounted()  # one create, the proxies' own token first, then only the allowed ones
    assert first[0].startswith("ingressmesh_token_") and first[1:] == list(done.mounted)
    # A label naming the cluster secret, and one naming the ingressmesh stack's own secret:
    hostile = HOSTILE + [service("grab", {"hosts": "grab.com", "port": "80", **tls("ingressmesh_secret", "ingressmesh_secret")}),
                         service("grab2", {"hosts": "grab2.com", "port": "80", **tls("mesh_controller_key", "mesh_controller_key")})]
    (done,) = deploy_once(ProxyServices(api, "reader-token"), (item,), cluster(hostile, TASKS), ("http://c:9401",), "mesh")
    assert {r.secret: r.reason for r in done.refused} == {
        "app_db_password": done.refused[0].reason,
        "mesh_controller_key": "a secret of the ingressmesh stack mesh: never mounted into the proxies"}
    assert done.outcome == "unchanged"  # nothing new mounted; grab is refused by its labels
    for names in api.mounted():
        assert not {"ingressmesh_secret", "app_db_password", "mesh_controller_key"} & set(names)


def test_a_label_naming_an_ingressmesh_credential_is_refused_by_every_proxy():
    for name in ("ingressmesh_secret", "ingressmesh_token_0123456789ab", "IngressMesh_ca"):
        got = plan_routes(cluster([service("grab", {"hosts": "grab.com", "port": "80", **tls(name, "k")})],
                                  [task("g1", "grab", 2)]), options=PlanOptions(now=NOW))
        assert got.routes == () and "names an ingressmesh credential" in got.refused[0].reason


@pytest.mark.parametrize("name,labels,patterns,allowed", [
    ("demo.local.cert", {}, (), False),                 # Interlock's example: the operator must allow it
    ("demo.local.cert", ALLOW, (), True),               # ... by a label on the secret
    ("demo.local.cert", {}, ("demo.local.*",), True),   # ... or in l7.toml
    ("demo_demo.local.cert", {}, ("demo_*",), True),    # the stack example: the stack's prefix
    ("other_demo.local.cert", {}, ("demo_*",), False),
    ("ingressmesh_secret", ALLOW, ("*",), False),       # never, whatever the rules say
    ("ingressmesh_token_x", {}, ("*",), False),
    ("token", {"io.ingressmesh.l7.proxy": "token"}, ("*",), False),  # what l7 deploy made
    ("my_ca", {}, ("*",), False),                       # the settings' ControllerCASecret
])
def test_the_allow_rule(name, labels, patterns, allowed):
    settings = ProxyServiceSettings(proxy_secrets=patterns, ca_secret="my_ca")
    assert (why_not(name, labels, settings, "mesh") == "") is allowed


def test_missing_secrets_are_named_and_bad_patterns_refused():
    mount, refused = decide({"gone": ("a",)}, {}, ProxyServiceSettings())
    assert mount == () and refused[0].line() == "secret gone (named by a) is not given to the proxies: no such Docker secret"
    with pytest.raises(SettingsError, match="Extensions.default.ProxySecrets"):
        l7_settings.parse('[Extensions.default]\nProxySecrets = ["../etc"]\n')


@pytest.mark.parametrize("pattern", ["*", "**", "?*", "a*", "*ab", "a?b*", "?" * 5])
def test_patterns_that_are_nearly_all_wildcards_are_refused_when_l7_toml_is_loaded(pattern):
    with pytest.raises(SettingsError) as err:
        l7_settings.parse(f'[Extensions.default]\nProxySecrets = ["demo.local.cert", "{pattern}"]\n')
    assert str(err.value).startswith("l7 config: Extensions.default.ProxySecrets: pattern")
    assert repr(pattern) in str(err.value) and "io.ingressmesh.l7.secret=true" in str(err.value)


@pytest.mark.parametrize("pattern", ["ab", "x", "abc*", "demo_*", "demo.local.?ert"])
def test_exact_names_and_patterns_with_enough_letters_load(pattern):
    (item,) = l7_settings.parse(f'[Extensions.default]\nProxySecrets = ["{pattern}"]\n')
    assert item.proxy_secrets == (pattern,)
