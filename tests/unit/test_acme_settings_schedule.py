"""The [ACME] table of l7.toml and the renewal / backoff / rate-limit rules (pure)."""
from __future__ import annotations

import pytest

from ingressmesh.l7 import acme_schedule as sched
from ingressmesh.l7 import acme_settings, settings
from ingressmesh.l7.acme_schedule import HostState, Policy
from ingressmesh.l7.settings import SettingsError

DAY = 86400.0
BASE = '[Extensions.default]\nPublishedPort = 8080\n'


def test_acme_table_with_every_key():
    text = BASE + '''
[ACME]
DirectoryURL = "https://ca.internal:9000/acme/acme/directory"
Email = "ops@example.org"
CABundle = "/etc/ingressmesh/acme-ca.pem"
RenewBefore = "20d"
EABKeyID = "kid-1"
EABHMACKey = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
'''
    found = acme_settings.parse(text)
    assert found.directory_url == "https://ca.internal:9000/acme/acme/directory"
    assert found.email == "ops@example.org" and found.ca_bundle == "/etc/ingressmesh/acme-ca.pem"
    assert found.renew_before == 20 * DAY and found.eab and found.eab_key_id == "kid-1"
    assert settings.parse(text)[0].published_port == 8080  # the proxy settings still load beside it


def test_no_acme_table_means_no_issuer_and_defaults():
    assert acme_settings.parse(BASE) is None
    found = acme_settings.parse('[ACME]\nDirectoryURL = "https://acme.example/dir"\n')
    assert found.renew_before == 30 * DAY and not found.eab and found.ca_bundle == "" and found.email == ""


@pytest.mark.parametrize("body, named", [
    ('Email = "a@b.c"', "ACME.DirectoryURL: missing"),
    ('DirectoryURL = "ftp://x"', "ACME.DirectoryURL: 'ftp://x' is not an http(s) URL"),
    ('DirectoryURL = "https://x/d"\nEmail = "not an address"', "ACME.Email"),
    ('DirectoryURL = "https://x/d"\nRenewBefore = "30 days"', "ACME.RenewBefore: '30 days' is not a duration"),
    ('DirectoryURL = "https://x/d"\nRenewBefore = "0d"', "ACME.RenewBefore"),
    ('DirectoryURL = "https://x/d"\nCABundle = "ca.pem"', "ACME.CABundle: 'ca.pem' is not an absolute path"),
    ('DirectoryURL = "https://x/d"\nEABKeyID = "kid-1"', "ACME.EABKeyID and ACME.EABHMACKey"),
    ('DirectoryURL = "https://x/d"\nEABKeyID = "k"\nEABHMACKey = "!!"', "ACME.EABHMACKey: not base64url"),
    ('DirectoryURL = "https://x/d"\nDirectoryUrl = "https://y/d"', "ACME.DirectoryUrl: unknown key"),
])
def test_bad_values_are_refused_by_key(body, named):
    with pytest.raises(SettingsError) as err:
        acme_settings.parse("[ACME]\n" + body + "\n", "l7.toml")
    assert str(err.value).startswith("l7.toml: ") and named in str(err.value)


def test_renewal_ahead_of_expiry():
    policy = Policy(renew_before=30 * DAY)
    assert sched.due(HostState("a.com"), 0.0, policy)  # no certificate yet: at once
    state = sched.succeeded(HostState("a.com"), 0.0, 1, not_after=90 * DAY)
    assert not sched.due(state, 59 * DAY, policy) and sched.due(state, 60 * DAY, policy)
    assert sched.next_wake([state], 1.0, policy) == 60 * DAY
    assert not sched.due(state, 60 * DAY, Policy(renew_before=10 * DAY))  # configurable


def test_backoff_doubles_up_to_the_cap_and_success_resets_it():
    policy = Policy(first=60.0, cap=300.0)
    state = HostState("a.com")
    waits = []
    for _ in range(5):
        state = sched.failed(state, 1000.0, "refused", policy)
        waits.append(state.next_try - 1000.0)
    assert waits == [60.0, 120.0, 240.0, 300.0, 300.0] and state.failures == 5 and state.last_error == "refused"
    assert not sched.due(state, 1299.0, policy) and sched.due(state, 1300.0, policy)
    state = sched.succeeded(state, 1300.0, 1, 1300.0 + 90 * DAY)
    assert state.failures == 0 and state.last_error == "" and state.next_try == 0.0


def test_rate_limited_waits_at_least_what_the_policy_says():
    policy = Policy(first=60.0, rate_limited=3600.0)
    state = sched.failed(HostState("a.com"), 0.0, "too many", policy, sched.RATE_LIMITED)
    assert state.next_try == 3600.0


def test_own_order_budget():
    policy = Policy(max_orders=3, window=100.0)
    assert sched.order_allowed([10.0, 20.0], 50.0, policy)
    assert not sched.order_allowed([10.0, 20.0, 30.0], 50.0, policy)
    assert sched.order_allowed([10.0, 20.0, 30.0], 111.0, policy)  # the first left the window
    assert sched.recent([10.0, 20.0, 30.0], 115.0, policy) == [20.0, 30.0]
