"""ControllerClient against real controllers on 127.0.0.1: follow, failover, reports, auth."""
from __future__ import annotations

import socket
import time

import pytest

from ingressmesh.agent.controller_client import (ControllerAuthError, ControllerClient, ControllerError,
                                                  ControllerUnreachable)
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.http import HttpService
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.report_digest import report_digest

TOKEN = "agent-client-test-token-012345"
REPORT = {"node_id": "n1", "containers": {"t1": {"health": "healthy", "stopping": False}},
          "lb_addresses": {"appnet": "10.0.1.2"}, "sent_at": 1700000000.0}



from ingressmesh.report_sequence import boot_id


def _held(report: dict) -> dict:
    """A report as the controller holds it: validated, with its digest."""
    return {**report, "digest": report_digest(report)}


class Controller:
    """A real controller server; restartable on the same port."""

    def __init__(self, cluster: dict, port: int = 0, token: str = TOKEN):
        self.store = SnapshotStore()
        self.version = self.store.publish(cluster)
        self.reports: list = []
        self.server = ControllerServer(self.store, self.reports.append, token, ControllerMetrics(),
                                       ("127.0.0.1", port)).start()
        self.url, self.port = self.server.url, self.server.port

    def stop(self):
        self.store.close()
        self.server.stop()


def _dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def controllers():
    started = []

    def start(name, **kwargs):
        c = Controller({"name": name}, **kwargs)
        started.append(c)
        return c
    yield start
    for c in started:
        c.stop()


def test_follow_gets_the_snapshot_then_long_polls(controllers):
    a = controllers("a")
    client = ControllerClient([a.url], TOKEN)
    assert client.reachable is None
    assert client.follow(0, 5) == (a.version, {"name": "a"})
    start = time.monotonic()
    assert client.follow(a.version, 0.2) is None
    assert 0.19 <= time.monotonic() - start < 3
    assert client.reachable is True and client.last_error is None and client.last_contact is not None
    client.close()


def test_failover_to_the_second_and_back(controllers):
    dead = _dead_url()
    b = controllers("b")
    client = ControllerClient([dead, b.url], TOKEN)
    assert client.follow(0, 1) == (b.version, {"name": "b"})
    assert client.current_url == b.url
    assert client.follow(0, 1) == (b.version, {"name": "b"})  # stays on the one that worked
    b.stop()
    a = controllers("a", port=int(dead.rsplit(":", 1)[1]))  # the first comes back
    assert client.follow(b.version, 1) == (a.version, {"name": "a"})
    assert client.current_url == dead == a.url
    client.close()


def test_failover_on_5xx_and_on_a_controller_that_never_answers(controllers):
    broken = HttpService(("127.0.0.1", 0), {("GET", "/v1/snapshot"): lambda r: (503, {"error": "resyncing"}, None)},
                         TOKEN).start()
    silent = HttpService(("127.0.0.1", 0), {("GET", "/v1/snapshot"): lambda r: time.sleep(3) or (304, None, None)},
                         TOKEN).start()
    good = controllers("good")
    try:
        client = ControllerClient([broken.url, silent.url, good.url], TOKEN, timeout=0.3)
        start = time.monotonic()
        assert client.follow(0, 0.1) == (good.version, {"name": "good"})
        assert time.monotonic() - start < 2.5
        client.close()
    finally:
        broken.stop()
        silent.stop()


def test_unreachable_names_every_url():
    urls = [_dead_url(), _dead_url()]
    client = ControllerClient(urls, TOKEN, timeout=1)
    with pytest.raises(ControllerUnreachable) as info:
        client.follow(0, 1)
    assert set(info.value.errors) == set(urls)
    for url in urls:
        assert f"{url}: " in str(info.value)
    assert "Connection refused" in str(info.value)
    assert client.reachable is False and "Connection refused" in client.last_error
    client.close()


def test_wrong_token_is_an_auth_error_without_failover(controllers):
    a = controllers("a", token="a-different-token-0123456789")
    b = controllers("b")
    client = ControllerClient([a.url, b.url], TOKEN)
    with pytest.raises(ControllerAuthError, match="refused the token: wrong bearer token"):
        client.follow(0, 1)
    assert client.current_url == a.url and "wrong bearer token" in client.last_error
    client.close()


def test_report_goes_to_every_controller(controllers):
    a, b = controllers("a"), controllers("b")
    dead = _dead_url()
    client = ControllerClient([a.url, dead, b.url], TOKEN)
    outcome = client.report(REPORT)
    assert outcome.accepted == [a.url, b.url]
    assert list(outcome.errors) == [dead] and "Connection refused" in outcome.errors[dead]
    for held in a.reports + b.reports:  # every post is stamped with this boot's id and clock
        assert held.pop("seq")["boot"] == boot_id()
    assert a.reports == [_held(REPORT)] and b.reports == [_held(REPORT)]
    client.close()


def test_report_raises_only_when_nobody_accepts(controllers):
    urls = [_dead_url(), _dead_url()]
    client = ControllerClient(urls, TOKEN, timeout=1)
    with pytest.raises(ControllerUnreachable) as info:
        client.report(REPORT)
    assert set(info.value.errors) == set(urls)
    client.close()
    a = controllers("a", token="a-different-token-0123456789")
    client = ControllerClient([a.url], TOKEN)
    with pytest.raises(ControllerAuthError):
        client.report(REPORT)
    client.close()


def test_refused_report_is_a_controller_error(controllers):
    a = controllers("a")
    client = ControllerClient([a.url], TOKEN)
    with pytest.raises(ControllerError, match="HTTP 400: report: containers\\['t1'\\].health") as info:
        client.report({**REPORT, "containers": {"t1": {"health": "great", "stopping": False}}})
    assert type(info.value) is ControllerError  # it answered: not "unreachable"
    assert client.reachable is True
    client.close()


def test_urls_are_checked():
    with pytest.raises(ValueError, match="at least one"):
        ControllerClient([], TOKEN)
    with pytest.raises(ValueError, match="'ftp://x'"):
        ControllerClient(["ftp://x"], TOKEN)


def test_reporter_keeps_reporting_to_a_live_controller_while_another_is_down(controllers):
    """One sender per controller: a dead controller never holds back the live one's reports."""
    from ingressmesh.agent.reporter import Reporter
    a = controllers("a")
    hung = socket.socket()  # accepts connections (backlog) and never answers: a hung controller
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"
    client = ControllerClient([hung_url, a.url], TOKEN, timeout=3)
    reporter = Reporter(client, lambda: REPORT, heartbeat=30).start()
    try:
        for _ in range(3):
            before, started = len(a.reports), time.monotonic()
            reporter.changed()
            while len(a.reports) == before and time.monotonic() - started < 2:
                time.sleep(0.01)
            assert len(a.reports) == before + 1 and time.monotonic() - started < 1.0
        deadline = time.monotonic() + 10
        while hung_url not in reporter.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hung_url in reporter.errors and a.url not in reporter.errors
    finally:
        reporter.stop()
        client.close()
        hung.close()
