"""`ingressmesh install --stack` without a swarm: settings refused by name, the secret made once,
the stack file and variables handed to `docker stack deploy` (a recording stand-in for docker),
and the controllers an agent finds from the swarm's managers.  The real deploy is in
tests/swarm/test_stack_install.py."""
from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from click.testing import CliRunner

from ingressmesh.agent import app as agent_app
from ingressmesh.cli import main
from ingressmesh.stack import ACME_CA_FILE, L7_FILE, STACK_FILE, StackError, StackSettings

FAKE_DOCKER = """#!/bin/sh
# Records each call (argv, the stack variables, stdin for `secret create`) as one JSON line.
log="$FAKE_DOCKER_LOG"
input=""
if [ "$2" = "secret" ] || [ "$1" = "secret" ]; then case "$*" in *create*) input="$(cat)";; esac; fi
python3 - "$log" "$input" "$@" <<'EOF'
import json, os, sys
keys = ("INGRESSMESH_IMAGE", "INGRESSMESH_BACKEND", "INGRESSMESH_ON_STOP", "INGRESSMESH_SOURCE_IP", "DOCKER_SOCK", "DOCKER_EXEC_ROOT",
        "INGRESSMESH_STACK_NAME", "INGRESSMESH_L7_CONFIG", "INGRESSMESH_L7_CONFIG_HASH", "INGRESSMESH_ACME_CA",
        "INGRESSMESH_ACME_CA_HASH")
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"argv": sys.argv[3:], "stdin": sys.argv[2],
                          "env": {k: os.environ[k] for k in keys if k in os.environ}}) + "\\n")
EOF
case "$*" in
  *"secret inspect"*) [ -e "$FAKE_DOCKER_LOG.secret" ] || exit 1; cat "$FAKE_DOCKER_LOG.secret" ;;
  *"secret create"*) for a; do case "$a" in io.ingressmesh.token.sha256=*) label="${a#*=}";; esac; done
                     echo "${label:-<no value>}" > "$FAKE_DOCKER_LOG.secret"; echo made ;;
  *"stack deploy"*) echo "Creating service ingressmesh_agent" ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("field,value,named", [
    ("name", "bad name", "stack name"), ("name", "-x", "stack name"),
    ("image", "img; rm -rf /", "image"), ("backend", "iptables", "backend"), ("on_stop", "never", "on-stop"),
    ("on_stop", "cleanup", "start-first"), ("source_ip", "keep", "source-ip"),
    ("docker_sock", "relative/docker.sock", "docker socket"), ("exec_root", "/run/docker,readonly", "exec root"),
    ("exec_root", "/run/docker\nx", "exec root"), ("resolve_image", "sometimes", "resolve-image"),
])
def test_bad_settings_are_refused_by_name(field, value, named):
    with pytest.raises(StackError, match=named):
        StackSettings(**{field: value}).check()


def test_the_stack_file_is_a_global_agent_and_controllers_on_managers():
    spec = yaml.safe_load(open(STACK_FILE, encoding="utf-8"))
    agent, controller = spec["services"]["agent"], spec["services"]["controller"]
    assert agent["deploy"]["mode"] == "global" and agent["deploy"]["update_config"]["order"] == "start-first"
    assert sorted(agent["cap_add"]) == ["NET_ADMIN", "SYS_ADMIN"] and "privileged" not in agent
    assert agent["networks"] == controller["networks"] == ["hostnet"] and spec["networks"]["hostnet"]["name"] == "host"
    # The exec root, not its netns/ (made by dockerd with the node's first sandbox, maybe after the agent's task)
    exec_root = [m for m in agent["volumes"] if isinstance(m, dict) and m.get("target") == "/run/docker"]
    assert exec_root[0]["source"] == "${DOCKER_EXEC_ROOT:-/run/docker}" and exec_root[0]["bind"]["propagation"] == "rslave"
    assert "--exec-root" in agent["command"] and agent["command"][agent["command"].index("--exec-root") + 1] == "/run/docker"
    assert controller["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert spec["secrets"]["ingressmesh_secret"]["external"] is True
    assert "--on-stop" in agent["command"] and agent["environment"]["INGRESSMESH_NODE_ID"] == "{{.Node.ID}}"
    # One --source-ip for every agent (they must agree: plan_source_ip.py)
    assert agent["command"][agent["command"].index("--source-ip") + 1] == "${INGRESSMESH_SOURCE_IP:-snat}"


def test_install_makes_the_token_and_secret_once_then_deploys(tmp_path, fake_docker):
    token_file = tmp_path / "etc" / "token"
    args = ["install", "--stack", "--token-file", str(token_file), "--image", "registry.example/im:2",
            "--backend", "nftables", "--docker-sock", "/srv/{{.Node.Hostname}}/docker.sock", "--resolve-image", "never",
            "--source-ip", "preserve"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "made the cluster secret" in first.output and "made the Docker secret ingressmesh_secret" in first.output
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    calls = fake_docker()
    create = [c for c in calls if c["argv"][:2] == ["secret", "create"]]
    assert create[0]["stdin"] == token_file.read_text().strip()  # the secret is the kept token
    deploy = [c for c in calls if c["argv"][:2] == ["stack", "deploy"]][0]
    assert deploy["argv"] == ["stack", "deploy", "--resolve-image", "never", "-c", STACK_FILE, "ingressmesh"]
    assert deploy["env"] == {"INGRESSMESH_IMAGE": "registry.example/im:2", "INGRESSMESH_BACKEND": "nftables",
                             "INGRESSMESH_ON_STOP": "handover", "INGRESSMESH_SOURCE_IP": "preserve",
                             "DOCKER_SOCK": "/srv/{{.Node.Hostname}}/docker.sock",
                             "DOCKER_EXEC_ROOT": "/run/docker", "INGRESSMESH_STACK_NAME": "ingressmesh"}
    again = CliRunner().invoke(main, args)  # idempotent: the token and the secret are kept
    assert again.exit_code == 0 and "made" not in again.output
    assert len([c for c in fake_docker() if c["argv"][:2] == ["secret", "create"]]) == 1


def test_install_refuses_bad_input_before_touching_docker(tmp_path, fake_docker):
    done = CliRunner().invoke(main, ["install", "--stack", "--name", "two words", "--token-file", str(tmp_path / "t")])
    assert done.exit_code != 0 and "stack name 'two words'" in done.output
    assert not (tmp_path / "calls.jsonl").exists() and not (tmp_path / "t").exists()
    (tmp_path / "short").write_text("x\n")
    done = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "short")])
    assert done.exit_code != 0 and "short" in done.output


class _FakeApi:
    def __init__(self, info):
        self._info = info

    def info(self):
        return self._info


def test_agents_find_a_controller_on_every_manager_their_own_first(monkeypatch):
    info = {"Swarm": {"NodeAddr": "10.0.0.2", "RemoteManagers": [
        {"NodeID": "a", "Addr": "10.0.0.1:2377"}, {"NodeID": "b", "Addr": "10.0.0.2:2377"},
        {"NodeID": "c", "Addr": "10.0.0.3:2377"}]}}
    monkeypatch.setattr(agent_app.docker, "APIClient", lambda **kw: _FakeApi(info))
    assert agent_app.manager_controllers("unix:///x", 9401) == (
        "http://10.0.0.2:9401", "http://10.0.0.1:9401", "http://10.0.0.3:9401")
    assert agent_app.manager_controllers("unix:///x", 9443, https=True)[0] == "https://10.0.0.2:9443"
    monkeypatch.setattr(agent_app.docker, "APIClient", lambda **kw: _FakeApi({"Swarm": {"NodeID": ""}}))
    with pytest.raises(RuntimeError, match="no swarm manager"):
        agent_app.manager_controllers("unix:///x", 9401)


L7_TOML = """[Extensions.default]
ProxyImage = "registry.example/im:2"
PublishedPort = 8080
"""


def test_an_l7_config_joins_the_stack_under_a_name_that_carries_its_hash(tmp_path, fake_docker):
    config = tmp_path / "l7.toml"
    config.write_text(L7_TOML)
    args = ["install", "--stack", "--token-file", str(tmp_path / "token"), "--l7-config", str(config)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    deploy = [c for c in fake_docker() if c["argv"][:2] == ["stack", "deploy"]][-1]
    assert deploy["argv"][4:] == ["-c", STACK_FILE, "-c", L7_FILE, "ingressmesh"]
    first_hash = deploy["env"]["INGRESSMESH_L7_CONFIG_HASH"]
    assert deploy["env"]["INGRESSMESH_L7_CONFIG"] == str(config) and len(first_hash) == 12
    config.write_text(L7_TOML.replace("8080", "8081"))  # a changed config is a new Docker config
    assert CliRunner().invoke(main, args).exit_code == 0
    deploy = [c for c in fake_docker() if c["argv"][:2] == ["stack", "deploy"]][-1]
    assert deploy["env"]["INGRESSMESH_L7_CONFIG_HASH"] != first_hash
    spec = yaml.safe_load(open(L7_FILE, encoding="utf-8"))
    assert spec["services"]["l7"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert "INGRESSMESH_L7_CONFIG_HASH" in spec["configs"]["l7"]["name"]


def test_the_acme_ca_bundle_is_given_to_the_l7_task_at_the_path_l7_toml_names(tmp_path, fake_docker):
    """A private ACME server's CA (l7.toml's ACME.CABundle, a file on the installing machine) becomes
    a Docker config, named by its hash, mounted where l7.toml says; a missing file is refused by name."""
    config, bundle = tmp_path / "l7.toml", tmp_path / "acme-ca.pem"
    config.write_text(L7_TOML + f'\n[ACME]\nDirectoryURL = "https://ca.internal/acme/directory"\nCABundle = "{bundle}"\n')
    args = ["install", "--stack", "--token-file", str(tmp_path / "token"), "--l7-config", str(config)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code != 0 and "ACME.CABundle" in done.output and str(bundle) in done.output
    assert not (tmp_path / "calls.jsonl").exists()
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    deploy = [c for c in fake_docker() if c["argv"][:2] == ["stack", "deploy"]][-1]
    assert deploy["argv"][4:] == ["-c", STACK_FILE, "-c", L7_FILE, "-c", ACME_CA_FILE, "ingressmesh"]
    assert deploy["env"]["INGRESSMESH_ACME_CA"] == str(bundle) and len(deploy["env"]["INGRESSMESH_ACME_CA_HASH"]) == 12
    spec = yaml.safe_load(open(ACME_CA_FILE, encoding="utf-8"))
    (mount,) = spec["services"]["l7"]["configs"]
    assert mount["source"] == "acme_ca" and "INGRESSMESH_ACME_CA" in mount["target"]
    assert "INGRESSMESH_ACME_CA_HASH" in spec["configs"]["acme_ca"]["name"]


def test_a_broken_l7_config_is_refused_by_name_before_anything_is_deployed(tmp_path, fake_docker):
    config = tmp_path / "l7.toml"
    config.write_text("[Extensions.default]\nPublishedPort = 99999\n")
    done = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "token"),
                                     "--l7-config", str(config)])
    assert done.exit_code != 0 and "PublishedPort" in done.output
    assert not (tmp_path / "calls.jsonl").exists()


def test_a_token_file_that_does_not_match_the_secret_is_refused(tmp_path, fake_docker):
    first = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    # another manager without the file: no new token is made (it would not match the secret)
    other = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "b")])
    assert other.exit_code != 0 and "exists but" in other.output and not (tmp_path / "b").exists()
    (tmp_path / "c").write_text("another-token-of-enough-length-0123456789abcdef\n")
    (tmp_path / "c").chmod(0o600)
    wrong = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "c")])
    assert wrong.exit_code != 0 and "holds another token" in wrong.output
    again = CliRunner().invoke(main, ["install", "--stack", "--token-file", str(tmp_path / "a")])
    assert again.exit_code == 0, again.output
    assert len([c for c in fake_docker() if c["argv"][:2] == ["stack", "deploy"]]) == 2


def test_the_users_dockerfile_holds_what_the_lab_image_holds():
    """The lab's offline image is tested; the Dockerfile users build must not lack what it has."""
    import re
    from ingressmesh.lab import proxy_image
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(repo, "docker", "proxy", "Dockerfile"), encoding="utf-8").read()
    install = re.search(r"apt-get install -y --no-install-recommends ((?:[^&]|\\\n)+)", text).group(1)
    packages = set(install.replace("\\", " ").split())
    included = next(a for a in proxy_image.DEBOOTSTRAP_ARGS if a.startswith("--include=")).split("=", 1)[1]
    assert set(included.split(",")) <= packages, set(included.split(",")) - packages
