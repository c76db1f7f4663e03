"""`install --stack --tls --l7-config` (issue 19): the stack files merged by the real docker CLI give
`l7 deploy` the CA only, and the proxy services it makes mount the same CA secret and dial https."""
import os
import shutil
import subprocess

import pytest
import yaml

from ingressmesh.l7.deployer import deploy_once
from ingressmesh.l7.proxy_service import CA_PATH, ProxyServices
from ingressmesh.l7.settings import SettingsError, parse, with_default_ca_secret
from ingressmesh.stack import L7_FILE, STACK_FILE, StackSettings
from ingressmesh.stack.tls import L7_TLS_FILE, TLS_FILE, ensure_files, files_hash

from l7_swarm import cluster, service, task
from test_l7_secret_policy import RecordingDocker

L7_TOML = """
[Extensions.default]
PublishedPort = 8095

[Extensions.own]
ProxyServiceName = "own-proxy"
ServiceCluster = "own"
PublishedPort = 8096
ControllerCASecret = "operator_ca"
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stack")
    ensure_files(str(directory / "tls"), ["10.0.0.5"])
    (directory / "l7.toml").write_text(L7_TOML)
    return StackSettings(tls_dir=str(directory / "tls"), l7_config=str(directory / "l7.toml")).check()


def test_tls_and_the_l7_layer_deploy_together(settings):
    assert settings.files() == [STACK_FILE, L7_FILE, TLS_FILE, L7_TLS_FILE]
    env = settings.environment()
    assert env["INGRESSMESH_TLS_HASH"] == files_hash(settings.tls_dir) and env["INGRESSMESH_L7_CONFIG_HASH"]


def test_the_merged_stack_gives_l7_deploy_the_ca_and_nothing_else_of_tls(settings):
    """`docker stack config` (the docker CLI's own merge and substitution, no daemon needed)."""
    docker = shutil.which("docker")
    assert docker, "the docker CLI is needed to merge the stack files as `docker stack deploy` does"
    files = [arg for path in settings.files() for arg in ("-c", path)]
    merged = subprocess.run([docker, "stack", "config", *files], capture_output=True, text=True, timeout=30,
                            env={**os.environ, **settings.environment()}, check=True)
    stack = yaml.safe_load(merged.stdout)
    digest = files_hash(settings.tls_dir)
    l7 = stack["services"]["l7"]
    assert l7["environment"]["INGRESSMESH_CA"] == "/run/secrets/ingressmesh_ca"
    assert l7["environment"]["INGRESSMESH_PROXY_CA_SECRET"] == f"ingressmesh_ca_{digest}"
    assert sorted(s["source"] for s in l7["secrets"]) == ["ingressmesh_ca", "ingressmesh_secret"]
    assert stack["secrets"]["ingressmesh_ca"]["name"] == f"ingressmesh_ca_{digest}"
    # l7 deploy runs as nobody behind the Docker API filter, which alone holds the manager's socket
    command = l7["command"]
    assert command[:4] == ["ingressmesh", "docker-filter", "--for", "l7-deploy"]
    deployer = command[command.index("--") + 1:]
    assert deployer[:3] == ["ingressmesh", "l7", "deploy"] and "/var/run/docker.sock" not in " ".join(deployer)
    assert deployer[deployer.index("--docker") + 1] == "unix://" + command[command.index("--listen") + 1]
    assert command[command.index("--run-as") + 1] == "65534:65534"
    token = next(s for s in l7["secrets"] if s["source"] == "ingressmesh_secret")
    assert (token["uid"], token["gid"], token["mode"]) == ("65534", "65534", 0o400)
    # the controllers' key goes to the controllers only
    for part in ("ingressmesh_tls_key", "ingressmesh_tls_cert"):
        assert {name for name, svc in stack["services"].items()
                for s in svc.get("secrets", ()) if s["source"] == part} == {"controller"}


def test_the_proxy_services_get_the_stack_ca_unless_l7_toml_names_one(settings):
    items = with_default_ca_secret(parse(L7_TOML), "ingressmesh_ca_abc")
    assert [i.ca_secret for i in items] == ["ingressmesh_ca_abc", "operator_ca"]
    assert with_default_ca_secret(items, "") == items
    with pytest.raises(SettingsError, match="--proxy-ca-secret"):
        with_default_ca_secret(items, "no such/name")
    api = RecordingDocker({"ingressmesh_ca_abc": {"com.docker.stack.namespace": "mesh"}, "operator_ca": {}})
    labelled = cluster([service("web", {"hosts": "web.local", "port": "80"})], [task("w1", "web", 2)])
    deploy_once(ProxyServices(api, "reader-token"), items[:1], labelled, ("https://10.0.0.5:9401",), "mesh")
    ((kind, spec),) = [call for call in api.calls if call[0] == "create_service"]
    container = spec["task_template"]["ContainerSpec"]
    argv = container["Command"]
    assert argv[argv.index("--ca") + 1] == CA_PATH and argv[argv.index("--controller") + 1] == "https://10.0.0.5:9401"
    mounted = {s["SecretName"]: s["File"]["Name"] for s in container["Secrets"]}
    assert mounted["ingressmesh_ca_abc"] == os.path.basename(CA_PATH)
    assert not any(name.startswith(("ingressmesh_tls_", "ingressmesh_secret")) for name in mounted)
