"""Per host certificate source and expiry, as `show --l7` prints it and /metrics exports it."""
from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingressmesh.cli.l7 import _print_rows
from ingressmesh.l7.cert_expiry import CertExpiry
from ingressmesh.l7.metrics import ProxyMetrics
from ingressmesh.l7.routes import RouteTable, TlsHost

EXPIRY = datetime.datetime(2027, 3, 1, 12, 0, tzinfo=datetime.timezone.utc)


def pem(tmp_path, name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(EXPIRY - datetime.timedelta(days=90)).not_valid_after(EXPIRY)
            .sign(key, hashes.SHA256()))
    path = tmp_path / f"cert-{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


def test_rows_metrics_and_show(tmp_path, capsys):
    table = RouteTable(tls_hosts=(
        TlsHost("a.com", ("a",), "acme.a-com.1234abcd.v2.crt", "acme.a-com.1234abcd.v2.key", pem=pem(tmp_path, "a"),
                acme=True),
        TlsHost("b.com", ("b",), "b_cert", "b_key", pem=pem(tmp_path, "b")),
        TlsHost("p.com", ("p",), passthrough=True)))  # passthrough: the app's certificate, not ours
    expiry = CertExpiry()
    rows = expiry.rows(table)
    assert rows == [{"host": "a.com", "source": "acme", "ssl_cert": "acme.a-com.1234abcd.v2.crt",
                     "not_after": EXPIRY.timestamp()},
                    {"host": "b.com", "source": "secret", "ssl_cert": "b_cert", "not_after": EXPIRY.timestamp()}]
    metrics = ProxyMetrics()
    metrics.observe_certificates(rows)
    text = metrics.render()[1].decode()
    assert 'ingressmesh_l7_certificate_not_after_seconds{host="a.com",source="acme"} 1.8039024e+09' in text
    document = {"snapshot_version": 3, "config_generation": 2, "reloads": 1, "routes": [], "backends": {},
                "certificates": rows}
    _print_rows({"proxy-1": document})
    out = capsys.readouterr().out
    assert "certificate a.com: acme (acme.a-com.1234abcd.v2.crt), expires 2027-03-01 12:00 UTC" in out
    assert "certificate b.com: secret (b_cert), expires 2027-03-01 12:00 UTC" in out
    assert expiry.rows(RouteTable()) == [] and expiry._seen == {}  # forgotten with their configs
