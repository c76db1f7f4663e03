"""The HTTP server under abuse, with real sockets on loopback: half-sent requests, slow and
huge bodies, too many connections, hostile JSON, peers that never read, hundreds of long-polls."""
from __future__ import annotations

import json
import logging
import resource
import select
import socket
import threading
import time

import pytest
import requests

from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.http import HttpService
from ingressmesh.daemon.http_limits import Limits
from ingressmesh.daemon.metrics import ControllerMetrics

TOKEN = "limits-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = Limits(max_connections=600, header_timeout=1.0, body_timeout=0.5, send_timeout=0.5, max_body=4096,
                max_json_depth=8)


def _echo(request):
    return 200, {"json": request.json}, None


@pytest.fixture(autouse=True)
def enough_descriptors():
    """Hundreds of client sockets plus the server's side of each: more than a default 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def service():
    svc = HttpService(("127.0.0.1", 0), {
        ("GET", "/healthz"): lambda r: (200, {"ok": True}, None),
        ("POST", "/v1/echo"): _echo,
        ("GET", "/v1/big"): lambda r: (200, b"x" * (64 << 20), "application/octet-stream"),
    }, TOKEN, limits=LIMITS).start()
    yield svc
    svc.stop()


def _connect(svc, timeout=5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", svc.port), timeout=timeout)


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closes (whatever it sent first), False if it still holds on."""
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and all bytes until the server closes (or 5 s)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0, data


def test_500_half_sent_requests_hold_no_threads_and_are_dropped(service):
    threads = threading.active_count()
    socks = []
    try:
        for _ in range(500):
            sock = _connect(service)
            sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Len")  # and never the rest
            socks.append(sock)
        time.sleep(0.2)
        assert threading.active_count() <= threads + 1  # no thread per connection
        started = time.monotonic()
        assert requests.get(service.url + "/healthz", timeout=5).json() == {"ok": True}  # still serving
        assert time.monotonic() - started < 1
        deadline = time.monotonic() + 5
        for sock in socks:  # every one is closed by the server once header_timeout (1 s) is over
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert _closed_by_server(sock)
        assert time.monotonic() - started < 4
    finally:
        for sock in socks:
            sock.close()


def test_a_body_that_never_completes_is_408(service):
    with _connect(service) as sock:
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
        started = time.monotonic()
        status, data = _answer(sock)
    assert status == 408 and b"body not received within 0.5 s" in data
    assert time.monotonic() - started < 3


def test_oversized_bodies_are_413_by_length_or_by_chunks(service):
    response = requests.post(service.url + "/v1/echo", data=b"1" * 5000, headers=AUTH, timeout=5)
    assert response.status_code == 413 and "over the 4096-byte limit" in response.json()["error"]
    chunks = (b"[" + b"1," * 1000 for _ in range(10))  # no Content-Length: chunked
    response = requests.post(service.url + "/v1/echo", data=chunks, headers=AUTH, timeout=5)
    assert response.status_code == 413


def test_a_lying_content_length_is_not_waited_for_beyond_the_limit(service):
    with _connect(service) as sock:
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Length: 999999999999\r\n\r\n")
        status, data = _answer(sock)
    assert status == 413


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "malformed JSON body"),
    (b"\xff\xfe\x00", "malformed JSON body"),
    (b"[" * 2000 + b"]" * 2000, "nested deeper than 8 levels"),  # fits in max_body, deeper than the limit
    (b"[" * 9 + b"]" * 9, "nested deeper than 8 levels"),
    (json.dumps({"a": [{"b": [[[[[[1]]]]]]}]}).encode(), "nested deeper than 8 levels"),
])
def test_hostile_json_is_400_without_a_traceback(service, body, problem, caplog, capfd):
    with caplog.at_level(logging.DEBUG):
        response = requests.post(service.url + "/v1/echo", data=body, headers=AUTH, timeout=5)
    assert response.status_code == 400 and problem in response.json()["error"]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert capfd.readouterr().err == ""


def test_deep_json_past_the_parser_recursion_limit_is_400():
    body = b"[" * 100000 + b"]" * 100000
    with HttpService(("127.0.0.1", 0), {("POST", "/v1/echo"): _echo}, TOKEN,
                     limits=Limits(max_body=1 << 20)).start() as svc:
        response = requests.post(svc.url + "/v1/echo", data=body, headers=AUTH, timeout=5)
    assert response.status_code == 400 and "nested deeper than" in response.json()["error"]


def test_json_within_the_depth_limit_is_handed_over(service):
    value = {"a": [{"b": [[1]]}]}
    response = requests.post(service.url + "/v1/echo", json=value, headers=AUTH, timeout=5)
    assert response.status_code == 200 and response.json() == {"json": value}


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01 a TLS hello\r\n\r\n", b"GARBAGE\r\n\r\n",
                                     b"GET / HTTP/9.x\r\n\r\n", b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                                     b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"])
def test_garbage_instead_of_http_is_400_without_a_traceback(service, garbage, caplog, capfd):
    with caplog.at_level(logging.DEBUG):
        with _connect(service) as sock:
            sock.sendall(garbage)
            status, _ = _answer(sock)
    assert status in (400, 414)
    assert "Traceback" not in caplog.text and capfd.readouterr().err == ""
    assert requests.get(service.url + "/healthz", timeout=5).status_code == 200


def test_over_the_cap_a_silent_connection_makes_room_and_503_only_when_all_hold_a_credential():
    release = threading.Event()
    routes = {("GET", "/healthz"): lambda r: (200, {"ok": True}, None),
              ("GET", "/v1/hold"): lambda r: (release.wait(10), (200, {"held": True}, None))[1]}
    with HttpService(("127.0.0.1", 0), routes, TOKEN, limits=Limits(max_connections=5, header_timeout=10)).start() as svc:
        idle = [_connect(svc, timeout=0.5) for _ in range(5)]
        deadline = time.monotonic() + 3
        while svc.connections < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        with _connect(svc) as extra:  # the oldest silent connection makes room: served, not refused
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _ = _answer(extra)
        assert status == 200 and svc.gate.evicted == 1
        assert _closed_by_server(idle[0]) and not any(_closed_by_server(s) for s in idle[1:])
        for sock in idle:
            sock.close()
        held = []
        for _ in range(5):  # five authenticated requests in flight: nobody to evict
            sock = _connect(svc, timeout=10)
            sock.sendall(b"GET /v1/hold HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
            held.append(sock)
        deadline = time.monotonic() + 3
        while (svc.connections < 5 or svc.gate.pending) and time.monotonic() < deadline:
            time.sleep(0.01)
        with _connect(svc) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, data = _answer(extra)
        assert status == 503 and b"too many connections" in data
        release.set()
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()
        deadline = time.monotonic() + 3
        while svc.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert requests.get(svc.url + "/healthz", timeout=5).status_code == 200


def test_a_peer_that_never_reads_its_answer_is_dropped(service):
    with _connect(service) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /v1/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        deadline = time.monotonic() + 5
        time.sleep(0.2)
        while service.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.connections == 0  # given up after send_timeout (0.5 s), not held forever


def test_hundreds_of_long_polls_cost_no_thread_each_and_all_wake_at_once():
    store = SnapshotStore()
    version = store.publish({"v": 1})
    server = ControllerServer(store, lambda r: None, TOKEN, ControllerMetrics(), ("127.0.0.1", 0)).start()
    socks = []
    try:
        threads = threading.active_count()
        request = (f"GET /v1/snapshot?since={version}&wait=20 HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
        for _ in range(300):
            sock = _connect(server.http)
            sock.sendall(request)
            socks.append(sock)
        deadline = time.monotonic() + 5
        while server.http.connections < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert threading.active_count() <= threads + 2  # the loop's watcher thread, not 300 threads
        started = time.monotonic()
        newer = store.publish({"v": 2})
        pending, answered = {s.fileno(): s for s in socks}, 0
        while pending and time.monotonic() - started < 5:
            ready, _, _ = select.select(list(pending.values()), [], [], 1)
            for sock in ready:
                data = sock.recv(65536)
                assert data.startswith(b"HTTP/1.1 200") and f'"version":{newer}'.encode() in data
                del pending[sock.fileno()]
                answered += 1
        assert answered == 300 and time.monotonic() - started < 2
    finally:
        for sock in socks:
            sock.close()
        store.close()
        server.stop()
