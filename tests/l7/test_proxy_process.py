"""The real `ingressmesh proxy` process (HAProxy included) against a stand-in controller on
loopback: it follows snapshots, keeps serving through a controller outage and a bad snapshot,
restarts a killed HAProxy, and finishes in-flight requests on SIGTERM."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fake_controller import FakeController
from l7_backends import free_port, free_ports

TOKEN = "t0ken-for-the-l7-tests"


def cluster(services: dict, backends, port: int) -> dict:
    """services: name -> hosts; one task per service on 127.0.0.N:port (started here)."""
    tasks, svc = [], []
    for i, (name, hosts) in enumerate(sorted(services.items())):
        address = f"127.0.0.{i + 2}"
        if name not in backends.servers:
            backends.start(name, address, port)
        svc.append({"id": name, "name": name, "labels": {"com.docker.lb.hosts": hosts, "com.docker.lb.port": str(port)}})
        tasks.append({"id": f"{name}-1", "service_id": name, "node_id": "n1", "since": time.time() - 100,
                      "addresses": [{"network_id": "lo", "address": address}]})
    return {"nodes": [{"id": "n1", "hostname": "node1", "address": "10.9.0.1"}],
            "networks": [{"id": "lo", "name": "app", "subnet": "127.0.0.0/8"}], "services": svc, "tasks": tasks}


class ProxyProcess:
    def __init__(self, tmp_path, controller_url: str, haproxy: str, extra: tuple = ()):
        self.http, self.listen, stats = free_ports(3)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        self.workdir = tmp_path / "work"
        self.log = open(tmp_path / "proxy.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingressmesh", "proxy", "--controller", controller_url, "--token-file", str(token_file),
             "--http-port", str(self.http), "--bind", "127.0.0.1", "--stats-port", str(stats),
             "--listen", f"127.0.0.1:{self.listen}", "--workdir", str(self.workdir), "--stop-linger", "0.5",
             "--stop-linger-max", "0.5", "--stop-timeout", "15", "--haproxy", haproxy, "--proxy-id", "test-proxy", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, host: str, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def state(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.listen, timeout=3)
        try:
            conn.request("GET", "/v1/l7/state", headers={"Authorization": f"Bearer {TOKEN}"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def wait(self, what: str, check, timeout: float = 10.0) -> float:
        start = time.monotonic()
        last = None
        while time.monotonic() - start < timeout:
            try:
                if check():
                    return time.monotonic() - start
            except OSError as err:
                last = err
            time.sleep(0.02)
        self.log.seek(0)
        raise AssertionError(f"{what} not within {timeout} s (last: {last}); proxy log:\n{self.log.read()[-3000:]}")

    def serves(self, host: str) -> bool:
        return self.get(host)[0] == 200

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        """SIGTERM (the proxy stops its HAProxy), SIGKILL only if that hangs; HAProxy runs in its
        own session, so a killed proxy would leave it behind: stop that one by its pid too."""
        master = None
        try:
            master = self.state().get("master_pid")
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if master and os.path.exists(f"/proc/{master}") and self.workdir.as_posix() in open(
                f"/proc/{master}/cmdline", "rb").read().decode(errors="replace"):
            os.kill(master, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def controller():
    running = FakeController(TOKEN)
    yield running
    running.close()


@pytest.fixture
def proxy(tmp_path, controller, haproxy_binary):
    running = ProxyProcess(tmp_path, controller.url, haproxy_binary)
    yield running
    running.stop()


def test_follows_snapshots_and_keeps_serving_through_a_controller_outage(proxy, controller, backends, tmp_path):
    port = free_port()
    controller.publish(cluster({"a": "a.test"}, backends, port))
    proxy.wait("a.test served", lambda: proxy.serves("a.test"))
    controller.publish(cluster({"a": "a.test", "b": "b.test"}, backends, port))
    print(f"new route served {proxy.wait('b.test served', lambda: proxy.serves('b.test')) * 1000:.0f} ms after publish")
    address = controller.server.server_address
    controller.close()  # outage: the proxy keeps what it serves
    time.sleep(2)
    assert proxy.serves("a.test") and proxy.serves("b.test")
    again = FakeController(TOKEN, port=address[1])
    try:
        again.version = 10
        again.publish(cluster({"b": "b.test"}, backends, port))
        proxy.wait("a.test gone after the controller came back", lambda: proxy.get("a.test")[0] == 404)
        assert proxy.serves("b.test")
    finally:
        again.close()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.listen, timeout=3)
    conn.request("GET", "/v1/l7/state")  # the route table (task addresses) needs the token
    assert conn.getresponse().status == 401
    conn.close()


def test_a_snapshot_that_fails_validation_keeps_the_last_routes(proxy, controller, backends):
    port = free_port()
    controller.publish(cluster({"a": "a.test"}, backends, port))
    proxy.wait("a.test served", lambda: proxy.serves("a.test"))
    bad = cluster({"a": "a.test"}, backends, port)
    bad["tasks"][0]["addresses"][0]["address"] = "999.1.1.1\nfrontend evil"
    controller.publish(bad)
    proxy.wait("the refusal logged", lambda: "refused, keeping the last one" in proxy.log_text())
    assert proxy.serves("a.test")


def test_a_killed_haproxy_is_started_again(proxy, controller, backends):
    port = free_port()
    controller.publish(cluster({"a": "a.test"}, backends, port))
    proxy.wait("a.test served", lambda: proxy.serves("a.test"))
    master = proxy.state()["master_pid"]
    os.kill(master, signal.SIGKILL)
    proxy.wait("a new haproxy master", lambda: proxy.state()["master_pid"] not in (None, master))
    proxy.wait("a.test served again", lambda: proxy.serves("a.test"))


def test_sigterm_lets_in_flight_requests_finish_then_exits(proxy, controller, backends):
    port = free_port()
    controller.publish(cluster({"a": "a.test"}, backends, port))
    proxy.wait("a.test served", lambda: proxy.serves("a.test"))
    result = {}

    def slow_request():
        try:
            result["answer"] = proxy.get("a.test", "/slow?5", timeout=20)
        except OSError as error:
            result["answer"] = error
    slow = threading.Thread(target=slow_request)
    slow.start()
    time.sleep(0.3)
    generation = proxy.state()["config_generation"]
    for odd in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):  # odd signals are not a stop
        proxy.proc.send_signal(odd)
    proxy.wait("SIGHUP reloads", lambda: proxy.state()["config_generation"] == generation + 1)
    assert proxy.proc.poll() is None and proxy.serves("a.test")
    proxy.proc.send_signal(signal.SIGTERM)
    # Past the 0.5 s linger new connections are refused at once, not queued (a queued one would
    # time out and fail the test): polled, since a loaded CI machine may take longer to get there.
    refused, deadline = False, time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        time.sleep(0.25)
        try:
            proxy.get("a.test", timeout=2)
        except ConnectionRefusedError:
            refused = True
        except ConnectionResetError:  # queued in the backlog as HAProxy closed its socket: not yet
            pass
    assert refused, "a new connection was still accepted 5 s after SIGTERM"
    assert slow.is_alive(), result  # the 5 s request is still being drained
    slow.join(15)
    assert result["answer"][0] == 200, result["answer"]
    assert proxy.proc.wait(15) == 0
    with pytest.raises(OSError):
        proxy.get("a.test", timeout=1)


@pytest.mark.timing  # a client stalled over 1 s between requests would look like the mesh's drain
def test_sigterm_keeps_accepting_while_new_connections_come_then_stops_once_they_cease(
        tmp_path, controller, backends, haproxy_binary):
    """The L4 mesh may take longer than --stop-linger to take a stopping proxy out of every node
    (CI saw a reset when it did): new connections still arriving keep the proxy accepting."""
    # click takes the last of the two --stop-linger-max: 8 s instead of the fixture's fixed 0.5 s
    proxy = ProxyProcess(tmp_path, controller.url, haproxy_binary, extra=("--stop-linger-max", "8"))
    try:
        controller.publish(cluster({"a": "a.test"}, backends, free_port()))
        proxy.wait("a.test served", lambda: proxy.serves("a.test"))
        proxy.proc.send_signal(signal.SIGTERM)
        answers, started = [], time.monotonic()
        while time.monotonic() - started < 3.0:  # the mesh still sends this task new connections
            try:
                answers.append(proxy.get("a.test", timeout=5)[0])
            except OSError as error:
                answers.append(repr(error))
            time.sleep(0.1)
        assert len(answers) >= 10 and set(answers) == {200}, answers  # past the 0.5 s minimum: none refused
        assert proxy.proc.wait(10) == 0
        log = proxy.log_text()
        assert "no longer accepting after" in log and "(no new connection for 1 s)" in log, log[-2000:]
        with pytest.raises(ConnectionRefusedError):
            proxy.get("a.test", timeout=1)
    finally:
        proxy.stop()


def _zombie_children(pid: int) -> list[int]:
    from ingressmesh.l7.children import children_of
    found = []
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    found.append(child)
        except OSError:
            pass
    return found


def test_kill_9_of_haproxy_refuses_no_connection_and_leaves_no_zombie(proxy, controller, backends):
    """Issue 20: the proxy holds the listening socket, so while HAProxy is started again the kernel
    queues new connections: none is refused, every request sent after the kill is answered.  What
    a kill -9 cannot save is a request the dying worker had already accepted (HAProxy's worker
    exits when its master dies): at most one per client, the one in flight at that moment.  The
    killed master's worker comes to the proxy (a subreaper, as PID 1 of its container) and is
    reaped.  A reload (new host) during the same loop fails nothing."""
    port = free_port()
    controller.publish(cluster({"a": "a.test"}, backends, port))
    proxy.wait("a.test served", lambda: proxy.serves("a.test"))
    master = proxy.state()["master_pid"]
    workers = [int(p) for p in open(f"/proc/{master}/task/{master}/children").read().split()]
    assert workers, "haproxy has no worker"
    done, failures, stop, killed = [0], [], threading.Event(), [float("inf")]

    def client():  # a new connection per request: what a refused port would fail
        deadline = time.monotonic() + 30  # bounded even if the test body fails
        while not stop.is_set() and time.monotonic() < deadline and done[0] < 20000:
            started = time.monotonic()
            try:
                status = proxy.get("a.test", timeout=10)[0]
                if status != 200:
                    failures.append((started - killed[0], status))
            except (OSError, http.client.HTTPException) as err:  # a response cut short too
                failures.append((started - killed[0], repr(err)))
            done[0] += 1

    loops = [threading.Thread(target=client) for _ in range(2)]
    for loop in loops:
        loop.start()
    try:
        time.sleep(0.5)
        generation = proxy.state()["config_generation"]
        controller.publish(cluster({"a": "a.test", "b": "b.test"}, backends, port))  # a seamless reload
        proxy.wait("b.test served", lambda: proxy.serves("b.test"))
        proxy.wait("the reload done", lambda: proxy.state()["config_generation"] > generation)
        assert failures == [], "a reload failed requests"
        before = done[0]
        killed[0] = time.monotonic()
        os.kill(master, signal.SIGKILL)
        restarted = proxy.wait("a new haproxy master", lambda: proxy.state()["master_pid"] not in (None, master))
        time.sleep(0.5)
        after = done[0]
    finally:
        stop.set()
        for loop in loops:
            loop.join(40)
    print(f"{done[0]} requests, {after - before} across the kill (new master {restarted * 1000:.0f} ms later); "
          f"lost in flight: {failures}")
    assert not [f for f in failures if "Refused" in str(f[1])], failures
    # One per client in 12 runs here; two allowed (a client may reconnect to the worker while it
    # is dying, under CI load), and none once the new master is up.
    assert len(failures) <= 2 * len(loops) and all(when < restarted for when, _ in failures), failures
    assert after - before > 10
    assert proxy.serves("b.test"), proxy.get("b.test")
    gone = lambda: not _zombie_children(proxy.proc.pid) and not any(  # noqa: E731
        os.path.exists(f"/proc/{p}") for p in [master, *workers])
    proxy.wait("the killed master's worker reaped (no zombie left)", gone)
