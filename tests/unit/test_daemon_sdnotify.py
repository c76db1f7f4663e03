"""sd_notify datagrams arrive on a real AF_UNIX socket; the watchdog pings only while alive."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from ingressmesh.daemon.sdnotify import Notifier, Watchdog


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def _drain(sock, count):
    return [sock.recv(4096).decode() for _ in range(count)]


def test_messages_arrive_as_systemd_expects(listener):
    path, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready() and notifier.watchdog() and notifier.status("synced v7\nsecond line")
    assert notifier.stopping()
    assert _drain(sock, 4) == ["READY=1", "WATCHDOG=1", "STATUS=synced v7 second line", "STOPPING=1"]


def test_abstract_socket_name():
    name = f"ingressmesh-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_no_socket_is_a_noop():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False
    assert notifier.watchdog_interval is None


def test_unreachable_socket_is_logged_not_raised(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.ready() is False
    assert "sd_notify 'READY=1'" in caplog.text


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "junk"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({}, None),
])
def test_watchdog_interval(env, expected):
    assert Notifier(env).watchdog_interval == expected


def test_watchdog_pings_only_while_alive(listener):
    path, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # 0.1 s: pings every 0.05 s
    alive = threading.Event()
    alive.set()
    dog = Watchdog(notifier, alive.is_set).start()
    try:
        assert dog.period == pytest.approx(0.05)
        assert _drain(sock, 3) == ["WATCHDOG=1"] * 3
        alive.clear()  # the main loop wedges: pings must stop
        time.sleep(0.12)  # let a ping that was already on its way land
        sock.settimeout(0.01)
        for _ in range(100):  # bounded: a watchdog that kept pinging would fail below
            try:
                sock.recv(100)
            except socket.timeout:
                break
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(100)
        alive.set()
        sock.settimeout(2.0)
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        dog.stop()


def test_watchdog_without_interval_does_not_start(listener):
    path, _ = listener
    dog = Watchdog(Notifier({"NOTIFY_SOCKET": path}), lambda: True).start()
    assert dog.period is None and dog._thread is None
    dog.stop()
