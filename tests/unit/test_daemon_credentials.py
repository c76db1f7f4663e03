"""Credentials derived from the cluster secret: what each stands for, and the CLI that makes them."""
from __future__ import annotations

import hashlib
import hmac
import os
import stat

import pytest
from click.testing import CliRunner

from ingressmesh.cli.daemons import agent_command, controller_command, token_group
from ingressmesh.daemon.credentials import (FULL, NODE, READER, ClusterAuth, Principal, TokenAuth, credential_node,
                                            is_derived, node_credential, reader_credential)

SECRET = "the-cluster-secret-0123456789abcdef"


def test_node_credential_is_the_hmac_of_the_node_id():
    mac = hmac.new(SECRET.encode(), b"node:abc123", hashlib.sha256).hexdigest()
    assert node_credential(SECRET, "abc123") == f"node:abc123:{mac}"
    assert credential_node(node_credential(SECRET, "abc123")) == "abc123"
    assert reader_credential(SECRET) == "reader:" + hmac.new(SECRET.encode(), b"reader", hashlib.sha256).hexdigest()
    assert node_credential(SECRET, "a") != node_credential(SECRET + "x", "a")
    with pytest.raises(ValueError, match="not a swarm node id"):
        node_credential(SECRET, "a:b")


def test_cluster_auth_tells_who_speaks():
    auth = ClusterAuth(SECRET)
    assert auth.authenticate(SECRET) == Principal(FULL)
    assert auth.authenticate(node_credential(SECRET, "n1")) == Principal(NODE, "n1")
    assert auth.authenticate(reader_credential(SECRET)) == Principal(READER)
    forged = node_credential(SECRET, "n1").replace("node:n1:", "node:n2:")  # another node's id, n1's MAC
    for token in (forged, node_credential("another-cluster-secret-000", "n1"), "reader:" + "0" * 64,
                  SECRET + "x", "node:n1", "", "node:n1:" + node_credential(SECRET, "n1")):
        assert auth.authenticate(token) is None, token


def test_what_each_principal_may_report():
    assert Principal(FULL).may_report_for("any") is None
    assert Principal(NODE, "n1").may_report_for("n1") is None
    assert "node 'n1' may not report for node 'n2'" in Principal(NODE, "n1").may_report_for("n2")
    assert "read-only" in Principal(READER).may_report_for("n1")


def test_token_auth_is_one_exact_token():
    auth = TokenAuth(SECRET)
    assert auth.authenticate(SECRET) == Principal(FULL)
    assert auth.authenticate(node_credential(SECRET, "n1")) is None


def _secret_file(tmp_path, content=SECRET) -> str:
    path = tmp_path / "token"
    path.write_text(content + "\n")
    path.chmod(0o600)
    return str(path)


def test_token_commands_print_the_credentials(tmp_path):
    runner = CliRunner()
    secret = _secret_file(tmp_path)
    result = runner.invoke(token_group, ["node", "--node-id", "n1", "--token-file", secret])
    assert result.exit_code == 0 and result.output == node_credential(SECRET, "n1") + "\n"
    result = runner.invoke(token_group, ["reader", "--token-file", secret])
    assert result.exit_code == 0 and result.output == reader_credential(SECRET) + "\n"
    out = str(tmp_path / "n1.token")
    result = runner.invoke(token_group, ["node", "--node-id", "n1", "--token-file", secret, "--out", out])
    assert result.exit_code == 0 and open(out).read() == node_credential(SECRET, "n1") + "\n"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    result = runner.invoke(token_group, ["node", "--node-id", "n1", "--token-file", secret, "--out", out])
    assert result.exit_code == 1 and "exists" in result.output  # never overwrites a secret


def test_token_commands_refuse_a_derived_credential_as_the_secret(tmp_path):
    derived = _secret_file(tmp_path, node_credential(SECRET, "n1"))
    assert is_derived(node_credential(SECRET, "n1")) and is_derived(reader_credential(SECRET))
    assert not is_derived(SECRET)
    result = CliRunner().invoke(token_group, ["reader", "--token-file", derived])
    assert result.exit_code == 1 and "derived credential, not the cluster secret" in result.output
    result = CliRunner().invoke(controller_command, ["--token-file", derived])
    assert result.exit_code == 1 and "derived credential, not the cluster secret" in result.output
    result = CliRunner().invoke(token_group, ["node", "--node-id", "bad:id", "--token-file", _secret_file(tmp_path)])
    assert result.exit_code == 2 and "not a swarm node id" in result.output


def test_agent_refuses_another_nodes_credential_before_starting(tmp_path):
    credential = _secret_file(tmp_path, node_credential(SECRET, "n1"))
    result = CliRunner().invoke(agent_command, ["--controller", "http://127.0.0.1:1", "--token-file", credential,
                                                "--node-id", "n2"])
    assert result.exit_code == 1
    assert "credential of node n1, but this node is n2" in result.output
    assert "ingressmesh token node --node-id n2" in result.output
    reader = _secret_file(tmp_path, reader_credential(SECRET))
    result = CliRunner().invoke(agent_command, ["--controller", "http://127.0.0.1:1", "--token-file", reader,
                                                "--node-id", "n2"])
    assert result.exit_code == 1 and "read-only credential" in result.output
