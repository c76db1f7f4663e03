"""The certificate store: secrets read, cut to their PEM blocks, checked with OpenSSL and
written once, 0600, named by content; bad ones refuse their services by name."""
from __future__ import annotations

import os
import stat

import pytest

from ingressmesh.l7.certs import CertStore
from ingressmesh.l7.routes import Backend, Route, RouteTable, TlsHost
from pki import secret

WEB = RouteTable(routes=(Route("a.com", "/", "be:a"), Route("b.com", "/", "be:b")),
                 backends=(Backend("be:a", ("a",)), Backend("be:b", ("b",))),
                 tls_hosts=(TlsHost("a.com", ("a",), "a_cert", "a_key"),))


@pytest.fixture
def store(tmp_path):
    return CertStore(str(tmp_path / "secrets"), str(tmp_path / "work" / "tls"))


@pytest.fixture
def a_pair(pki, store):
    cert, key = pki.leaf("store-a", "a.com")
    secret(store.secrets_dir, "a_cert", cert)
    secret(store.secrets_dir, "a_key", key)
    return cert, key


def refused(table) -> dict:
    return {r.service: r.reason for r in table.refused}


def test_a_good_pair_becomes_one_private_combined_pem(store, a_pair):
    table = store.resolve(WEB, https=True)
    assert not table.refused and table.routes == WEB.routes
    pem = table.tls_hosts[0].pem
    assert os.path.dirname(pem) == store.out_dir and os.path.basename(pem).startswith("cert-")
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600 and stat.S_IMODE(os.stat(store.out_dir).st_mode) == 0o700
    with open(pem) as handle:
        text = handle.read()
    assert text.count("BEGIN CERTIFICATE") == 1 and text.count("PRIVATE KEY-----") == 2
    assert store.resolve(WEB, https=True).tls_hosts[0].pem == pem  # same content, same file
    assert os.listdir(store.out_dir) == [os.path.basename(pem)]


@pytest.mark.parametrize("case,expected", [
    ("missing", "secret a_key is not available to the proxy"),
    ("mismatch", "the key in secret a_key does not match the certificate in secret a_cert"),
    ("binary", "secret a_cert: not a PEM file"),
    ("garbage", "not a usable certificate and key"),
    ("empty", "secret a_cert (ssl_cert): no PEM certificate in it"),
    ("key_in_cert", "secret a_cert (ssl_cert) holds a private key"),
    ("encrypted", "secret a_key: an encrypted key"),
    ("two_keys", "expected one PEM private key, found 2"),
])
def test_a_bad_secret_refuses_its_service_by_name_and_nobody_else(store, a_pair, pki, case, expected):
    cert, key = a_pair
    path = lambda name: os.path.join(store.secrets_dir, name)  # noqa: E731
    other_key = pki.leaf("store-other", "a.com")[1]
    with open(key) as handle:
        key_text = handle.read()
    if case == "missing":
        os.unlink(path("a_key"))
    elif case == "mismatch":
        secret(store.secrets_dir, "a_key", other_key)
    elif case == "binary":
        with open(path("a_cert"), "wb") as handle:
            handle.write(b"\x00\xff" * 100)
    elif case == "garbage":
        with open(path("a_cert"), "w") as handle:
            handle.write("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    elif case == "empty":
        open(path("a_cert"), "w").close()
    elif case == "key_in_cert":
        with open(path("a_cert"), "a") as handle:
            handle.write(key_text)
    elif case == "encrypted":
        with open(path("a_key"), "w") as handle:
            handle.write(key_text.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"))
    elif case == "two_keys":
        with open(path("a_key"), "a") as handle:
            handle.write(key_text)
    table = store.resolve(WEB, https=True)
    assert list(refused(table)) == ["a"] and expected in refused(table)["a"]
    assert "host a.com: " in refused(table)["a"] and "BEGIN" not in refused(table)["a"]
    assert [r.host for r in table.routes] == ["b.com"] and not table.tls_hosts
    assert not [n for n in os.listdir(store.out_dir) if n.endswith(".check")] if os.path.isdir(store.out_dir) else True


def test_a_secret_this_replica_was_not_given_yet_keeps_the_certificate_the_host_had(store, a_pair, pki):
    served = store.resolve(WEB, https=True).tls_hosts[0].pem
    rotated = RouteTable(routes=WEB.routes, backends=WEB.backends,
                         tls_hosts=(TlsHost("a.com", ("a",), "a_cert_v2", "a_key_v2"),))
    table = store.resolve(rotated, https=True)  # the label moved to secrets this proxy task does not have
    assert not table.refused and table.tls_hosts[0].pem == served
    assert any("a_cert_v2 is not available" in note and "keeping" in note for note in table.notes)
    cert, key = pki.leaf("store-a2", "a.com", org="v2")
    secret(store.secrets_dir, "a_cert_v2", cert)
    secret(store.secrets_dir, "a_key_v2", key)
    fresh = store.resolve(rotated, https=True).tls_hosts[0].pem
    assert fresh != served
    store.prune(store.files(store.resolve(rotated, https=True)))
    assert os.listdir(store.out_dir) == [os.path.basename(fresh)]


def test_backend_ca_bundles_are_checked_too(store, pki):
    table = RouteTable(routes=(Route("a.com", "/", "be:a"),),
                       backends=(Backend("be:a", ("a",), ssl="required", ca_secret="ca"),))
    assert "secret ca is not available" in refused(store.resolve(table, https=False))["a"]
    secret(store.secrets_dir, "ca", pki.cert)
    resolved = store.resolve(table, https=False)
    assert not resolved.refused and resolved.backends[0].ca_file.endswith(".pem")
    _, key = pki.leaf("store-ca-key", "x.com")
    secret(store.secrets_dir, "ca", key)
    assert "holds a private key" in refused(store.resolve(table, https=False))["a"]


def test_no_https_port_or_no_secrets_directory(tmp_path, store, a_pair):
    assert "no HTTPS port" in refused(store.resolve(WEB, https=False))["a"]
    bare = CertStore(None, str(tmp_path / "tls"))
    assert "no secrets directory" in refused(bare.resolve(WEB, https=True))["a"]
    passthrough = RouteTable(routes=WEB.routes, backends=WEB.backends, tls_hosts=(TlsHost("a.com", ("a",), passthrough=True),))
    assert not bare.resolve(passthrough, https=True).refused  # passthrough needs no secret
