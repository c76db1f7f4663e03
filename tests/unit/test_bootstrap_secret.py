"""An agent given the cluster secret keeps only its node's credential (agent/bootstrap_secret.py);
the kernel side (the file covered in a private mount namespace) is tests/kernel/test_agent_in_container.py."""
import subprocess

from click.testing import CliRunner

from ingressmesh.agent.bootstrap_secret import hide_secret_file, is_docker_secret, node_scoped
from ingressmesh.cli import main
from ingressmesh.daemon.credentials import NODE, ClusterAuth, node_credential, reader_credential

SECRET = "bootstrap-test-cluster-secret-0123456789"
CONTAINER = ("400 393 0:95 / /run/secrets ro,relatime - tmpfs tmpfs rw,size=65536k\n"
             "401 393 0:96 / /proc/sys ro,relatime - proc proc rw\n")
HOST = "22 28 0:5 / /run rw,nosuid,nodev shared:12 - tmpfs tmpfs rw\n"


def test_the_cluster_secret_becomes_the_nodes_own_credential():
    credential, derived = node_scoped(SECRET, "n3")
    assert derived and credential == node_credential(SECRET, "n3")
    assert ClusterAuth(SECRET).authenticate(credential).role == NODE  # the controllers check it with the secret
    assert ClusterAuth(SECRET).authenticate(credential).may_report_for("n1") is not None  # and it speaks for n3 only
    assert node_scoped(credential, "n3") == (credential, False)  # already a node's: kept
    assert node_scoped(reader_credential(SECRET), "n3") == (reader_credential(SECRET), False)


def test_only_a_file_in_a_containers_secrets_mount_is_covered(tmp_path):
    assert is_docker_secret("/run/secrets/ingressmesh_token", CONTAINER)
    per_file = "402 393 0:97 /ingressmesh_token /run/secrets/ingressmesh_token ro,relatime - tmpfs tmpfs rw\n"
    assert is_docker_secret("/run/secrets/ingressmesh_token", HOST + per_file)  # how dockerd mounts each secret
    assert not is_docker_secret("/run/secrets/other", HOST + per_file)
    assert not is_docker_secret("/run/secrets/ingressmesh_token", HOST)  # a host path of that name
    assert not is_docker_secret("/etc/ingressmesh/token", CONTAINER)
    info = tmp_path / "mountinfo"
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")
    info.write_text(HOST)
    assert "not a Docker secret" in hide_secret_file("/run/secrets/ingressmesh_token", str(info), run)
    assert calls == []
    info.write_text(CONTAINER)
    assert hide_secret_file("/run/secrets/ingressmesh_token", str(info), run) is None
    assert calls == [["mount", "--bind", "/dev/null", "/run/secrets/ingressmesh_token"]]


def test_an_agent_given_a_reader_credential_is_still_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text(reader_credential(SECRET))
    token.chmod(0o600)
    result = CliRunner().invoke(main, ["agent", "--token-file", str(token), "--node-id", "n3",
                                       "--docker", "unix:///nonexistent.sock"])
    assert result.exit_code != 0 and "read-only credential" in result.output
