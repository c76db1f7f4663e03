"""An ACME server that needs an external account binding (l7.toml's ACME.EABKeyID and
ACME.EABHMACKey, as ZeroSSL, Google's CA or a corporate step-ca hand them out): Debian's pebble
with `externalAccountBindingRequired`, on loopback.  The right key id and MAC key get an account
(and an order, whose challenge reaches the issuer's publish step); none, or a wrong MAC key, is
refused and named, and no order is placed."""
from __future__ import annotations

import base64

import pytest

from acme_pebble import Pebble
from ingressmesh.l7.acme_client import AcmeClient, AcmeError, new_key_pem
from ingressmesh.l7.acme_settings import AcmeSettings
from l7_backends import free_ports

KEY_ID = "kid-ingressmesh"
MAC_KEY = base64.urlsafe_b64encode(b"0123456789abcdef0123456789abcdef").decode().rstrip("=")


STOP = "stopped here: the order's HTTP-01 answers were handed to publish"


@pytest.fixture
def pebble(tmp_path, pki):
    http_port, *ports = free_ports(5)
    server = Pebble(str(tmp_path / "pebble"), pki, http_port, tuple(ports), eab_keys={KEY_ID: MAC_KEY})
    yield server
    server.close()


def _issue(pebble, published: list, **eab) -> None:
    """One order, stopped once its answers reach publish (AcmeError passes through unchanged)."""
    settings = AcmeSettings(pebble.directory, email="ops@example.org", ca_bundle=pebble.ca_file, **eab)

    def publish(answers):
        published.append(answers)
        raise AcmeError(STOP)
    AcmeClient(settings, new_key_pem(), timeout=20).issue(("eab.test",), publish)


def test_the_external_account_binding_gets_an_account_and_an_order(pebble):
    published = []
    with pytest.raises(AcmeError, match=STOP):
        _issue(pebble, published, eab_key_id=KEY_ID, eab_hmac_key=MAC_KEY)
    (answers,) = published
    assert answers and all(value.startswith(token + ".") for token, value in answers.items())
    assert pebble.orders() == 1


@pytest.mark.parametrize("eab", [{}, {"eab_key_id": KEY_ID, "eab_hmac_key": MAC_KEY[::-1]},
                                 {"eab_key_id": "kid-unknown", "eab_hmac_key": MAC_KEY}],
                         ids=["none", "wrong MAC key", "unknown key id"])
def test_a_missing_or_wrong_binding_is_refused_by_name_and_orders_nothing(pebble, eab):
    published = []
    with pytest.raises(AcmeError) as raised:
        _issue(pebble, published, **eab)
    assert str(raised.value).startswith(f"ACME account at {pebble.directory}: "), raised.value
    assert raised.value.error_type.endswith(("externalAccountRequired", "unauthorized")), raised.value.error_type
    assert pebble.orders() == 0 and published == []
    print(f"{eab or 'no binding'}: {raised.value}")
