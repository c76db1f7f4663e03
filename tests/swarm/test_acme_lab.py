"""Automatic certificates on the real swarm lab (issue 23, tests 1, 3 and 5): Debian's pebble and
its mock DNS run in a network namespace of this module's own, attached to the lab's fabric; the
issuer runs inside `l7 deploy --watch`.  A labelled service gets a pebble certificate, served
over HTTPS through every node and by both proxy replicas (verified against pebble's root), with
one order; the challenge labels roll no proxy task; a restarted issuer orders nothing again; the
label removed, the ACME secrets are gone.  Two issuers at once order once, and the standby takes
over from a killed holder (the issuer lease, acme_lease.py)."""
from __future__ import annotations

import json
import signal
import ssl
import time

import pytest

import acme_helpers
from acme_helpers import certificate_versions, lease_holder, pebble_on_lab
from ingressmesh.l7 import acme_labels, acme_names
from ingressmesh.l7.acme_swarm import LEASE_SECRET
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.swarm_probe import LoadGenerator
from l7_helpers import DEFAULT_PROXY, HTTP_PORT, HTTPS_PORT, every_node, proxies_deployed, replicas, settled_replicas
from l7_helpers import labelled, wait_routed
from swarm_helpers import NETWORK, remove_service, wait_for, wait_running

HOST = "app.acme.lab"
APP = "acme-app"


@pytest.fixture(scope="module")
def pebble(lab, tmp_path_factory):
    with pebble_on_lab(lab, str(tmp_path_factory.mktemp("acme")), HTTP_PORT) as server:
        yield server


@pytest.fixture(scope="module")
def l7(mesh, pebble):
    try:
        yield from proxies_deployed(mesh, config(mesh, pebble), ((DEFAULT_PROXY, 2),))
    finally:
        for name in acme_secrets(mesh.lab) + [LEASE_SECRET]:
            mesh.lab.docker(1, "secret", "rm", name, check=False)


def acme_secrets(lab) -> list[str]:
    out = lab.docker(1, "secret", "ls", "--filter", f"name={acme_names.PREFIX}", "--format", "{{.Name}}").stdout
    return sorted(out.split())


def proxy_labels(lab) -> dict:
    return json.loads(lab.docker(1, "service", "inspect", DEFAULT_PROXY).stdout)[0]["Spec"]["Labels"]


def proxy_tasks(lab) -> set[str]:
    """Every task the proxy service ever had (a rolling update adds one per replica)."""
    return set(lab.docker(1, "service", "ps", "-q", DEFAULT_PROXY).stdout.split())


def config(mesh, pebble, renew_before: str = "") -> str:
    """l7.toml: the default proxies (2 replicas, HTTP and HTTPS; the shared overlay their
    RoutingNetwork, as l7_helpers.deploy) and pebble as the ACME server."""
    return (l7_lab.extension("default", mesh.controller_url, HTTP_PORT, ssl_port=HTTPS_PORT, routing_network=NETWORK)
            + f'\n[ACME]\nDirectoryURL = "{pebble.directory}"\nCABundle = "{pebble.ca_file}"\n'
            + (f'RenewBefore = "{renew_before}"\n' if renew_before else ""))


def restart_issuer(mesh, pebble, renew_before: str = "") -> None:
    """l7 deploy stopped and started again (what Swarm does with its task), with this config."""
    mesh.stop("l7")
    l7_lab.deploy(mesh, config(mesh, pebble, renew_before))


def serial(netns: str, address: str, port: int, context: ssl.SSLContext, host: str = HOST) -> tuple[int, int]:
    return acme_helpers.serial(netns, address, port, context, host)


def served_everywhere(lab, context: ssl.SSLContext, host: str = HOST) -> set[int]:
    """The serials both replicas (asked directly) and every node serve for `host`; empty until all verify."""
    found = replicas(lab, DEFAULT_PROXY)
    if len(found) != 2:
        return set()
    try:
        answers = [serial(lab.node_netns(n), ip, 443, context, host) for n, _, ip in found]
    except (OSError, ssl.SSLError, ValueError, IndexError):
        return set()
    through_nodes = acme_helpers.served_through_every_node(lab, HTTPS_PORT, context, host)
    if not through_nodes or not all(status == 200 for status, _ in answers):
        return set()
    return {number for _, number in answers} | through_nodes


def test_pebble_certificate_on_every_node_one_order_restart_orders_nothing_label_gone_secrets_gone(l7, pebble):
    lab = l7.lab
    context = pebble.trust()
    labelled(lab, APP, hosts=HOST, port="80")
    try:
        wait_running(lab, APP, 1)
        wait_routed(lab, HOST)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        before = proxy_tasks(lab)
        started = time.monotonic()
        lab.docker(1, "service", "update", "--detach", "--label-add", f"{acme_labels.ACME}=true", APP)
        serials = wait_for("the pebble certificate on both replicas and every node",
                           lambda: served_everywhere(lab, context), timeout=150, interval=1)
        took = time.monotonic() - started
        settled_replicas(lab, DEFAULT_PROXY, 2)
        assert len(serials) == 1  # every replica, every node: the same certificate
        assert pebble.orders() == 1
        # The challenge answers' withdrawal is a label-only change, held while Swarm rolls the
        # proxies (proxy_service.py): it may come a pass after the roll has settled.
        def answers_withdrawn():
            labels = acme_labels.issuer_labels(proxy_labels(lab))
            assert labels == {acme_labels.CERTS: f"{HOST}:1"}, labels
            return True
        wait_for("the challenge answers withdrawn", answers_withdrawn, timeout=30, interval=1)
        assert acme_secrets(lab) == sorted(acme_names.cert_secrets(HOST, 1))
        status, state = l7.get(f"http://{lab.node_address(1)}:{l7_lab.DEPLOY_PORT}/acme")  # the issuer's own state
        (row,) = state["hosts"]
        assert status == 200 and (row["host"], row["service"], row["version"], row["last_error"]) == (HOST, APP, 1, "")
        assert row["not_after"] > time.time() + 86400 and row["issued_at"] > 0
        # One start-first roll (the new secrets mounted); publishing and withdrawing the challenge
        # answer changed only the service's labels, which rolled nothing.
        assert len(proxy_tasks(lab) - before) == 2

        # The issuer restarted (Swarm would start l7 deploy's task again): it reads the served
        # version back from the proxy service and orders nothing.
        restart_issuer(l7, pebble)
        time.sleep(15)  # more than one issuer pass (every 10 s)
        assert pebble.orders() == 1 and served_everywhere(lab, context) == serials
        assert acme_labels.issuer_labels(proxy_labels(lab)) == {acme_labels.CERTS: f"{HOST}:1"}

        lab.docker(1, "service", "update", "--detach", "--label-rm", acme_labels.ACME, APP)
        wait_for("the ACME secrets removed", lambda: not acme_secrets(lab), timeout=90, interval=1)
        # The label goes with the pass after the unmounting roll: l7 deploy holds a label-only
        # change while Swarm rolls the proxies (proxy_service.py), so it may trail the secrets.
        wait_for("the issuer's labels withdrawn", lambda: acme_labels.issuer_labels(proxy_labels(lab)) == {},
                 timeout=60, interval=1)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        assert [a.status for a in every_node(lab, HOST)] == [200] * len(lab.config.node_numbers)  # plain HTTP
        print(f"certificate issued and served by every node {took:.1f} s after the label was added")
    except AssertionError:
        print_logs(l7, pebble)
        raise
    finally:
        remove_service(lab, APP)


def issuer_state(l7, port: int) -> str:
    status, state = l7.get(f"http://{l7.lab.node_address(1)}:{port}/acme")
    assert status == 200, state
    return state["issuer"]


def test_two_issuers_order_once_and_the_standby_takes_over_when_the_holder_goes_silent(l7, pebble):
    """Two `l7 deploy --watch` with the same l7.toml at once (a start-first update of its service, a
    manager cut off while Swarm starts its task elsewhere): one holds the issuer lease and orders,
    the other stands by and does nothing; the holder killed (no clean stop: the lease is not
    released), the other takes over once the lease stood still for its ttl, orders nothing that
    is served and issues the next host.  Each host ends with one certificate version."""
    lab, second, third, second_port = l7.lab, "acme-second.acme.lab", "acme-third.acme.lab", l7_lab.DEPLOY_PORT + 1
    context = pebble.trust()
    l7_lab.deploy(l7, config(l7, pebble), name="l7-standby", port=second_port)
    killed = False
    try:
        wait_for("the first l7 deploy issuing, the second standing by", lambda: (
            issuer_state(l7, l7_lab.DEPLOY_PORT).startswith("issuing")
            and issuer_state(l7, second_port).startswith("standing by (lease held by")), timeout=60, interval=1)
        holder = lease_holder(lab)
        assert holder and holder in issuer_state(l7, second_port)
        orders = pebble.orders()
        labelled(lab, "acme-second", "--label", f"{acme_labels.ACME}=true", hosts=second, port="80")
        wait_for("the second host's certificate everywhere", lambda: served_everywhere(lab, context, second),
                 timeout=150, interval=1)
        status, standby = l7.get(f"http://{lab.node_address(1)}:{second_port}/acme")
        assert status == 200 and standby["hosts"] == [] and standby["issuer"].startswith("standing by"), standby
        assert certificate_versions(lab, second) == [1]
        between = pebble.orders() - orders
        started = time.monotonic()
        l7.stop("l7", sig=signal.SIGKILL)  # gone without a word: its lease stays until it stands still
        killed = True
        wait_for("the standby to take the lease", lambda: issuer_state(l7, second_port).startswith("issuing"),
                 timeout=90, interval=1)
        took = time.monotonic() - started
        assert lease_holder(lab) not in ("", holder)
        labelled(lab, "acme-third", "--label", f"{acme_labels.ACME}=true", hosts=third, port="80")
        wait_for("a certificate the new holder issued everywhere", lambda: served_everywhere(lab, context, third),
                 timeout=150, interval=1)
        assert certificate_versions(lab, second) == [1] and certificate_versions(lab, third) == [1]  # nothing issued twice
        assert served_everywhere(lab, context, second)  # what the killed holder issued is still served
        print(f"issuer lease: the standby took over {took:.1f} s after the holder was killed (ttl 30 s); pebble "
              f"orders: {between} while two ran, {pebble.orders() - orders} in all (a retried challenge counts)")
    except AssertionError:
        print_logs(l7, pebble)
        print("standby's log:\n" + open(l7.log_path("l7-standby"), encoding="utf-8", errors="replace").read()[-4000:])
        raise
    finally:
        remove_service(lab, "acme-second")
        remove_service(lab, "acme-third")
        l7.stop("l7-standby")  # a clean stop: the lease is released, the fixture's l7 deploy takes it at once
        if killed:
            l7_lab.deploy(l7, config(l7, pebble))


def served_serial(context: ssl.SSLContext, host: str):
    """A LoadGenerator probe: one verified HTTPS GET for `host`; names the certificate served."""
    def probe(netns: str, address: str, port: int) -> str:
        try:
            status, number = serial(netns, address, port, context, host)
        except (ValueError, IndexError) as err:  # no HTTP status line
            raise OSError(f"HTTPS answer not HTTP: {err}") from None
        if status != 200:
            raise OSError(f"HTTPS {status}")
        return str(number)
    return probe


def print_logs(mesh, pebble) -> None:
    with open(mesh.log_path("l7"), encoding="utf-8", errors="replace") as handle:
        print("l7 deploy's log (the issuer's lines):\n" + handle.read()[-6000:])
    print("pebble's log:\n" + pebble.log_text()[-3000:])


def test_renewal_under_https_load_through_every_node_fails_no_request(l7, pebble):
    """The issuer renews (a RenewBefore longer than pebble's validity makes the certificate due)
    while HTTPS requests (a new verified TLS connection each) go through every node: none fails,
    the new certificate reaches every replica and node, the replaced version's secrets go."""
    lab, host, app = l7.lab, "renew.acme.lab", "acme-renew"
    context = pebble.trust()
    labelled(lab, app, "--label", f"{acme_labels.ACME}=true", hosts=host, port="80")
    try:
        first = wait_for("the first certificate everywhere", lambda: served_everywhere(lab, context, host),
                         timeout=150, interval=1)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        orders = pebble.orders()
        targets = [(lab.node_address(n), HTTPS_PORT) for n in lab.config.node_numbers]
        load = LoadGenerator(lab.client_netns(), targets, pause=0.01, limit=20000,
                             probe=served_serial(context, host))
        with load:
            time.sleep(2)
            restart_issuer(l7, pebble, renew_before="3650d")  # every certificate is due at once
            renewed = wait_for("a renewed certificate everywhere", lambda: (
                lambda found: found if found and found != first else None)(served_everywhere(lab, context, host)),
                timeout=150, interval=1)
            restart_issuer(l7, pebble)  # back to the default 30 days: nothing more is due
            settled_replicas(lab, DEFAULT_PROXY, 2)
            time.sleep(2)
        result = load.result
        assert result.failures == [] and result.ok > 100, result.failures[:5]
        assert len(renewed) == 1 and pebble.orders() > orders
        version = acme_labels.parse_certs(acme_labels.issuer_labels(proxy_labels(lab))[acme_labels.CERTS])[host]
        assert version >= 2
        assert set(acme_names.cert_secrets(host, version)) <= set(acme_secrets(lab))
        older = lambda: [n for n in acme_secrets(lab) if acme_names.parse(n).subject == acme_names.host_subject(host)
                         and acme_names.parse(n).version < version]  # (a newer one a stopped order left is kept)
        wait_for("the replaced versions' secrets removed", lambda: not older(), timeout=60, interval=1)
        print(f"renewal under load: {result.ok} HTTPS requests through every node, 0 failed, "
              f"served {dict(result.seen)}")
    except AssertionError:
        print_logs(l7, pebble)
        raise
    finally:
        remove_service(lab, app)
