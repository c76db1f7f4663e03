"""`install --stack --tls` (stack/tls.py): the CA and the controller certificate made with the real
openssl, then a real controller serving https with them and a real agent client checking them."""
import os
import stat

import pytest

from ingressmesh.agent.controller_client import ControllerClient, ControllerError, Credentials
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.daemon.tls import server_context
from ingressmesh.stack import StackError, StackSettings
from ingressmesh.stack.tls import FILES, TLS_FILE, covers, ensure_files, files_hash, secret_names, subject_alt_names

TOKEN = "stack-tls-test-cluster-secret-0123456789"


def test_the_certificate_names_every_manager_and_is_made_again_for_a_new_one(tmp_path):
    directory = str(tmp_path / "tls")
    assert ensure_files(directory, ["127.0.0.1", "10.0.0.5"]) is True
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(directory, "ca.key")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(directory, FILES["key"])).st_mode) == 0o600
    cert = os.path.join(directory, FILES["cert"])
    assert covers(cert, ["10.0.0.5", "127.0.0.1"]) and not covers(cert, ["10.0.0.6"])
    digest, ca = files_hash(directory), open(os.path.join(directory, FILES["ca"]), "rb").read()
    assert ensure_files(directory, ["10.0.0.5", "127.0.0.1"]) is False and files_hash(directory) == digest
    assert ensure_files(directory, ["10.0.0.5", "127.0.0.1", "10.0.0.6"]) is True  # a manager joined
    assert covers(cert, ["10.0.0.6"]) and files_hash(directory) != digest
    assert open(os.path.join(directory, FILES["ca"]), "rb").read() == ca  # the same CA: agents keep trusting it
    assert subject_alt_names(["fd00::1", "m1.example"]) == "DNS:ingressmesh-controller,IP:fd00::1,DNS:m1.example"
    assert set(secret_names("abc")) == {"cert", "key", "ca"} and secret_names("abc")["ca"] == "ingressmesh_ca_abc"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tls"))
    ensure_files(directory, ["127.0.0.1"])
    return directory


def _follow_once(made: str, ca_file: str, timeout: float = 10.0):
    """A real controller serving https with the made certificate, followed once by a real client."""
    store = SnapshotStore()
    store.publish({"name": "tls"})
    server = ControllerServer(store, lambda report: None, TOKEN, ControllerMetrics(), ("127.0.0.1", 0),
                              tls=server_context(os.path.join(made, FILES["cert"]), os.path.join(made, FILES["key"]))
                              ).start()
    client = ControllerClient([server.url], Credentials(TOKEN, verify=ca_file), timeout=timeout)
    try:
        assert server.url.startswith("https://127.0.0.1:")
        return client.follow(0, 1)
    finally:
        client.close()
        store.close()
        server.stop()


def test_a_controller_with_the_certificate_is_followed_by_an_agent_with_the_ca(made, tmp_path):
    assert _follow_once(made, os.path.join(made, FILES["ca"]))[1] == {"name": "tls"}
    other = str(tmp_path / "other")
    ensure_files(other, ["127.0.0.1"])  # another install's CA: refused before the token is sent
    with pytest.raises(ControllerError, match="does not verify"):
        _follow_once(made, os.path.join(other, FILES["ca"]), timeout=2)


def test_stack_settings_with_tls(made, tmp_path):
    settings = StackSettings(tls_dir=made).check()
    assert settings.files()[-1] == TLS_FILE
    assert settings.environment()["INGRESSMESH_TLS_HASH"] == files_hash(made)
    with pytest.raises(StackError, match="must be an absolute path"):
        StackSettings(tls_dir="tls").check()
