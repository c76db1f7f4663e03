"""The issuer's pass over the services, with a stand-in ACME client (the real protocol against
pebble is tests/l7/test_acme_pebble.py): one order per due host, labels published, state read
back from labels after a restart, errors per host with backoff, versions and cleanup."""
from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from ingressmesh import snapshot
from ingressmesh.l7 import acme_labels, acme_names
from ingressmesh.l7.acme_client import AcmeError, Issued, new_key_pem
from ingressmesh.l7.cert_expiry import not_after
from ingressmesh.l7.acme_issuer import Issuer
from ingressmesh.l7.acme_schedule import Policy
from ingressmesh.l7.acme_settings import AcmeSettings
from ingressmesh.l7.acme_store import DirectoryStore
from ingressmesh.l7.acme_swarm import ProxyLabelPublisher

DAY = 86400.0


class StubClient:
    """Orders answered by self-signed 90-day certificates; `refuse` names hosts whose order fails."""

    def __init__(self, refuse=()):
        self.refuse, self.orders = set(refuse), []

    def issue(self, hosts, publish):
        self.orders.append(hosts)
        token = f"token{len(self.orders):02d}" + "x" * 20
        publish({token: f"{token}.{'T' * 43}"})
        if hosts[0] in self.refuse:
            raise AcmeError(f"certificate for {hosts[0]}: the challenge was refused: 404",
                            "urn:ietf:params:acme:error:unauthorized")
        key = new_key_pem()
        private = serialization.load_pem_private_key(key, None)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=90)).sign(private, hashes.SHA256()))
        chain = cert.public_bytes(serialization.Encoding.PEM).decode()
        return Issued(chain, key.decode(), not_after(chain))


class LabelPublisher(ProxyLabelPublisher):
    """l7 deploy's publisher (the proxy service's labels); each push recorded, as l7 deploy
    would update the proxy service with the labels at that moment."""

    def __init__(self):
        super().__init__({}, lambda: self.pushed.append(dict(self.labels)))
        self.pushed: list[dict[str, str]] = []

    def answered(self) -> list[int]:
        """How many HTTP-01 answers each push carried."""
        return [sum(len(acme_labels.parse_http01(v)) for k, v in labels.items() if k != acme_labels.CERTS)
                for labels in self.pushed]


def services(publisher, wanted: dict[str, str]):
    found = [{"id": "proxy", "name": "proxy", "labels": dict(publisher.labels)}]  # the proxy service
    for name, hosts in wanted.items():
        labels = {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "80", "io.ingressmesh.lb.acme": "true"}
        found.append({"id": name, "name": name, "labels": labels})
    return snapshot.from_dict({"services": found}).services


def issuer(tmp_path, client, publisher, clock):
    made = Issuer(AcmeSettings("https://acme.test/dir"), DirectoryStore(str(tmp_path / "store")), publisher,
                  "proxy", probe_urls=(), policy=Policy(first=60.0, cap=600.0), clock=lambda: clock[0])
    made._client = client
    return made


def test_one_order_per_host_then_nothing_until_renewal(tmp_path):
    publisher, clock = LabelPublisher(), [1000.0]
    client = StubClient()
    one = issuer(tmp_path, client, publisher, clock)
    account = one._account_key()  # created once, then read back
    assert account == one._account_key() and b"PRIVATE KEY" in account
    states = one.run_once(services(publisher, {"a": "a.com,b.com"}))
    assert sorted(client.orders) == [("a.com",), ("b.com",)]
    assert states["a.com"].version == 1 and states["a.com"].not_after > clock[0] + 30 * DAY
    assert acme_labels.parse_certs(publisher.labels[acme_labels.CERTS]) == {"a.com": 1, "b.com": 1}
    assert set(publisher.labels) == {acme_labels.CERTS}  # answers withdrawn after each order
    # per order: the answer published before validation, the version served, the answer withdrawn
    assert publisher.answered() == [1, 1, 0, 1, 1, 0]
    store = one.store.names()
    assert set(acme_names.cert_secrets("a.com", 1)) <= set(store)
    one.run_once(services(publisher, {"a": "a.com,b.com"}))
    # a new issuer (restarted, or another manager's) reads the versions back: no new order
    two = issuer(tmp_path, client, publisher, clock)
    assert two.run_once(services(publisher, {"a": "a.com,b.com"}))["b.com"].version == 1
    assert len(client.orders) == 2
    # renewal: 30 days before expiry a new version, the old one removed at the next pass
    clock[0] = states["a.com"].not_after - 29 * DAY
    assert two.run_once(services(publisher, {"a": "a.com,b.com"}))["a.com"].version == 2
    assert len(client.orders) == 4
    two.run_once(services(publisher, {"a": "a.com,b.com"}))
    names = set(two.store.names())
    assert set(acme_names.cert_secrets("a.com", 2)) <= names and not set(acme_names.cert_secrets("a.com", 1)) & names
    # the label goes: the proxy service stops naming its certificates, which then go (the account key stays)
    two.run_once(services(publisher, {}))
    assert acme_labels.CERTS not in publisher.labels
    assert two.store.names() == [acme_names.account_secret("https://acme.test/dir", 1)]


def test_a_refused_host_is_named_backs_off_and_others_go_on(tmp_path):
    publisher, clock = LabelPublisher(), [1000.0]
    client = StubClient(refuse={"bad.com"})
    one = issuer(tmp_path, client, publisher, clock)
    states = one.run_once(services(publisher, {"good": "good.com", "bad": "bad.com"}))
    assert states["good.com"].version == 1 and states["bad.com"].version == 0
    assert "challenge was refused" in states["bad.com"].last_error and states["bad.com"].next_try == 1060.0
    clock[0] = 1030.0
    one.run_once(services(publisher, {"good": "good.com", "bad": "bad.com"}))
    assert len(client.orders) == 2  # backing off: no order for bad.com
    clock[0] = 1061.0
    states = one.run_once(services(publisher, {"good": "good.com", "bad": "bad.com"}))
    assert len(client.orders) == 3 and states["bad.com"].failures == 2 and states["bad.com"].next_try == 1061.0 + 120
    row = next(r for r in one.document() if r["host"] == "bad.com")
    assert row["service"] == "bad" and row["source"] == "acme" and "refused" in row["last_error"]


def test_services_that_name_their_own_certificate_are_refused_by_name(tmp_path):
    publisher, clock = LabelPublisher(), [1000.0]
    client = StubClient()
    one = issuer(tmp_path, client, publisher, clock)
    found = services(publisher, {"own": "own.com"})
    labels = dict(found[-1].labels) | {"com.docker.lb.ssl_cert": "c", "com.docker.lb.ssl_key": "k"}
    own = snapshot.from_dict({"services": [{"id": "own", "name": "own", "labels": labels}]}).services
    assert one.run_once(own) == {} and not client.orders and "ssl_cert/ssl_key win" in one.refused["own"]


def test_derived_account_key_is_the_same_for_every_holder_of_the_secret(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    from ingressmesh.l7.acme_account import derived_key_pem
    secret = b"the-cluster-secret-0123456789abcdef"
    one = derived_key_pem(secret, "https://acme.test/dir")
    assert one == derived_key_pem(secret, "https://acme.test/dir")  # another manager: the same account
    assert one != derived_key_pem(secret, "https://other.test/dir")  # another server: another account
    assert one != derived_key_pem(secret + b"x", "https://acme.test/dir")  # a rotated secret: a new account
    assert isinstance(serialization.load_pem_private_key(one, None).curve, ec.SECP256R1)
    made = issuer(tmp_path, StubClient(), LabelPublisher(), [1000.0])
    made.account_key = one
    assert made._account_key() == one and made.store.names() == []  # nothing kept in the store
    import pytest
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        derived_key_pem(b"short", "https://acme.test/dir")


def test_l7_deploy_checks_a_challenge_through_every_nodes_published_port():
    from ingressmesh.l7.acme_deploy import PROBES_PER_REPLICA, probe_urls
    nodes = [{"Status": {"Addr": "10.0.0.2"}}, {"Status": {"Addr": "10.0.0.1"}}, {"Status": {"Addr": "0.0.0.0"}},
             {"Status": {}}]
    urls = probe_urls(nodes, 8080, 2)
    assert sorted(set(urls)) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]  # no unknown address
    assert urls.count("http://10.0.0.1:8080") == 2 * PROBES_PER_REPLICA  # the mesh picks a replica per connection
    assert probe_urls([], 80, 2) == ()


def test_an_issuer_that_loses_the_lease_mid_order_stores_nothing_and_orders_no_more(tmp_path):
    """One order can outlast the issuer lease (acme_lease.py): asked again before validation and
    before storing, a lost lease ends the order (named), and no further host is ordered."""
    publisher, clock, holding = LabelPublisher(), [1000.0], [True]
    client = StubClient()
    made = issuer(tmp_path, client, publisher, clock)
    made.may_issue = lambda: holding[0]
    real_issue = client.issue

    def issue(hosts, publish):
        holding[0] = False  # the lease lapses while the order runs
        return real_issue(hosts, publish)
    client.issue = issue
    states = made.run_once(services(publisher, {"a": "a.test", "b": "b.test"}))
    assert client.orders == [("a.test",)]  # b.test is not ordered by an issuer that lost the lease
    assert "issuer lease was lost" in states["a.test"].last_error and states["a.test"].version == 0
    assert made.store.names() == [] and acme_labels.CERTS not in publisher.labels
