"""TLS on the controller API, on loopback with a CA made here: an agent client follows and
reports over https, and refuses a controller whose certificate does not verify."""
from __future__ import annotations

import socket
import ssl
import time

import pytest
import requests
from click.testing import CliRunner

from ingressmesh.agent.controller_client import ControllerClient, ControllerUnreachable, Credentials
from ingressmesh.cli.daemons import controller_command
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.http_limits import Limits
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.daemon.tls import TlsError, server_context
from ingressmesh.report_digest import report_digest
from tls_certs import make_pki

TOKEN = "tls-test-cluster-secret-0123456789"
REPORT = {"node_id": "n1", "containers": {"t1": {"health": "healthy", "stopping": False}},
          "lb_addresses": {"appnet": "10.0.1.2"}, "sent_at": 1700000000.0}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_controller(pki):
    store = SnapshotStore()
    store.publish({"name": "tls"})
    reports: list = []
    server = ControllerServer(store, reports.append, TOKEN, ControllerMetrics(), ("127.0.0.1", 0),
                              tls=server_context(pki.cert, pki.key),
                              limits=Limits(header_timeout=1.0)).start()
    server.reports = reports
    yield server
    server.stop()


def test_agent_client_follows_and_reports_over_tls(tls_controller, pki):
    assert tls_controller.url.startswith("https://127.0.0.1:")
    client = ControllerClient([tls_controller.url], Credentials(TOKEN, verify=pki.ca))
    try:
        version, cluster = client.follow(0, 5)
        assert cluster == {"name": "tls"}
        start = time.monotonic()
        assert client.follow(version, 0.3) is None  # the long-poll works through TLS too
        assert 0.29 <= time.monotonic() - start < 3
        assert client.report(REPORT).accepted == [tls_controller.url]
        (held,) = tls_controller.reports
        assert held.pop("seq")["boot"] and held == {**REPORT, "digest": report_digest(REPORT)}
    finally:
        client.close()


def test_a_certificate_from_another_ca_is_refused_naming_the_url(tls_controller, tmp_path):
    other = make_pki(tmp_path, name="other")
    client = ControllerClient([tls_controller.url], Credentials(TOKEN, verify=other.ca), timeout=2)
    try:
        with pytest.raises(ControllerUnreachable) as info:
            client.follow(0, 1)
        message = str(info.value)
        assert f"{tls_controller.url}: TLS certificate does not verify" in message
        assert "certificate verify failed" in message and "--ca" in message
        with pytest.raises(ControllerUnreachable, match="TLS certificate does not verify"):
            client.report(REPORT)
        assert tls_controller.reports == []  # the token was never sent to it
    finally:
        client.close()


def test_system_cas_do_not_trust_a_private_ca(tls_controller):
    client = ControllerClient([tls_controller.url], TOKEN, timeout=2)  # verify=True: the system's CAs
    try:
        with pytest.raises(ControllerUnreachable, match="TLS certificate does not verify"):
            client.follow(0, 1)
    finally:
        client.close()


def test_plain_http_is_not_answered_by_a_tls_controller(tls_controller):
    plain = tls_controller.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):
        requests.get(plain + "/v1/snapshot", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=3)


def test_a_silent_tls_peer_is_dropped_after_the_handshake_timeout(tls_controller):
    with socket.create_connection(("127.0.0.1", tls_controller.port), timeout=5) as sock:
        start = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server: no handshake within header_timeout (1 s)
        assert 0.5 < time.monotonic() - start < 4


def test_unusable_certificate_files_are_named(pki, tmp_path):
    with pytest.raises(TlsError, match=f"TLS certificate {tmp_path}/missing.pem: No such file"):
        server_context(str(tmp_path / "missing.pem"), pki.key)
    other = make_pki(tmp_path, name="mismatch")
    with pytest.raises(TlsError, match=f"TLS certificate {pki.cert} with key {other.key} cannot be used"):
        server_context(pki.cert, other.key)
    context = server_context(pki.cert, pki.key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_controller_command_checks_the_tls_options(pki, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    runner = CliRunner()
    result = runner.invoke(controller_command, ["--token-file", str(token), "--tls-cert", pki.cert])
    assert result.exit_code == 2 and "--tls-cert and --tls-key go together" in result.output
    result = runner.invoke(controller_command, ["--token-file", str(token), "--tls-cert", pki.cert,
                                                "--tls-key", str(tmp_path / "nope.pem")])
    assert result.exit_code == 1 and "TLS key " in result.output and "nope.pem: No such file" in result.output


def test_unreadable_ca_file_is_refused_at_once(tmp_path):
    with pytest.raises(ValueError, match=f"CA file {tmp_path}/none.pem: cannot read it"):
        ControllerClient(["https://127.0.0.1:1"], Credentials(TOKEN, verify=str(tmp_path / "none.pem")))


@pytest.mark.parametrize("command", ["agent", "proxy", "l7 deploy"])
def test_every_client_of_the_controller_takes_a_ca(command):
    from ingressmesh.cli import main
    result = CliRunner().invoke(main, command.split() + ["--help"])
    assert result.exit_code == 0 and "--ca FILE" in result.output
    assert "--tls-verify / --no-tls-verify" in result.output


def test_tls_options_become_the_client_credentials(pki, tmp_path):
    from ingressmesh.cli.daemons import _credentials
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    assert _credentials(str(token), pki.ca, True) == Credentials(TOKEN, verify=pki.ca)
    assert _credentials(str(token), None, True) == Credentials(TOKEN, verify=True)  # the system's CAs
    assert _credentials(str(token), pki.ca, False) == Credentials(TOKEN, verify=False)
