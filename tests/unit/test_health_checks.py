"""The health checks of ingressmesh's own services (issue 20, 6b): cheap probes whose timing
survives CPU pressure, and the proxy's probe run for real against a /healthz on a socket."""
import os
import socket
import subprocess
import time

import pytest
import yaml

from ingressmesh.daemon.http import HttpService
from ingressmesh.l7 import settings as l7_settings
from ingressmesh.l7.proxy_service import HEALTH, desired_spec, health_command

from l7_swarm import cluster

STACK = os.path.join(os.path.dirname(__file__), "..", "..", "ingressmesh", "stack", "ingressmesh-stack.yml")


def _seconds(text: str) -> float:
    """A compose duration such as `5s` (the stack file's; l7.toml's parser reads the same form)."""
    return l7_settings._duration("healthcheck", text)


def _check_timing(interval: float, timeout: float, retries: int, start: float) -> None:
    assert 5 <= interval <= 10, "a probe is a docker exec: not every second"
    assert timeout >= 20, "a probe must not fail because the node is busy for a while (a docker exec can take 10 s)"
    assert retries == 3
    assert start >= 120, "a Python start in a container on a busy node can take minutes"


def test_the_proxy_service_checks_its_healthz_cheaply_and_patiently():
    settings = l7_settings.parse('[Extensions.default]\nPublishedPort = 8080\n')[0]
    check = desired_spec(settings, cluster([], []), ("id", "ingressmesh_token_x"), ())["TaskTemplate"][
        "ContainerSpec"]["Healthcheck"]
    assert check["Test"] == ["CMD-SHELL", HEALTH]
    assert "python" not in HEALTH and "/healthz" in HEALTH
    _check_timing(check["Interval"] / 1e9, check["Timeout"] / 1e9, check["Retries"], check["StartPeriod"] / 1e9)


def test_the_agent_service_checks_its_lease_every_few_seconds():
    with open(STACK) as f:
        agent = yaml.safe_load(f)["services"]["agent"]
    check = agent["healthcheck"]
    assert check["test"] == ["CMD", "test", "-s", "/tmp/ingressmesh-agent.lease"]
    assert "/tmp/ingressmesh-agent.lease" in agent["command"]  # the file the agent writes once it holds the lease
    _check_timing(_seconds(check["interval"]), _seconds(check["timeout"]), check["retries"],
                  _seconds(check["start_period"]))


@pytest.fixture
def healthz():
    answer = {"status": 200}
    svc = HttpService(("127.0.0.1", 0), {("GET", "/healthz"): lambda r: (answer["status"], {"serving": True}, None)},
                      "t0ken-for-the-tests-0123456789").start()
    yield svc, answer
    svc.stop()


def _probe(port: int) -> tuple[int, float]:
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", health_command(port)], capture_output=True, timeout=30)
    return done.returncode, time.monotonic() - started


def test_the_proxy_probe_passes_on_200_and_fails_on_503_or_no_listener(healthz):
    svc, answer = healthz
    code, took = _probe(svc.port)
    assert code == 0 and took < 5
    answer["status"] = 503  # e.g. HAProxy not running, or the proxy stopping
    assert _probe(svc.port)[0] != 0
    port = svc.port
    svc.stop()
    code, took = _probe(port)
    assert code != 0 and took < 5  # refused at once: no probe waits for Docker's timeout


def test_the_proxy_probe_gives_up_before_dockers_timeout_when_nothing_answers():
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        code, took = _probe(listener.getsockname()[1])
    assert code != 0 and 3.5 < took < 8  # its own 4 s read limit, under the 10 s timeout: no probe lingers
