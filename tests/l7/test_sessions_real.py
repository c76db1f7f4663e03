"""Sessions through a real HAProxy on loopback: sticky cookies, ip_hash, and a websocket that
keeps echoing across reloads."""
from __future__ import annotations

import json
import re
import socket

from ingressmesh.testbed.websocket import echo, upgrade
from swarm_real import Swarm, get, master, second_replica


def served(response) -> str:
    status, _, body = response
    assert status == 200, response
    return json.loads(body)["backend"]


class Browser:
    """Keeps the SID cookie the way a browser would: the last Set-Cookie wins."""

    def __init__(self, proxy, host: str):
        self.proxy, self.host, self.cookie = proxy, host, ""

    def get(self) -> str:
        response = get(self.proxy, self.host, "/session", {"Cookie": self.cookie} if self.cookie else None)
        set_cookie = response[1].get("set-cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";")[0]
        return served(response)


def test_sticky_cookie_keeps_a_session_on_one_task_and_moves_it_once_when_the_task_leaves(proxy, backends):
    swarm = Swarm(backends).service("s", hosts="s.com", sticky_session_cookie="SID")
    tasks = {swarm.task(f"s{i}", "s") for i in range(3)}
    proxy.apply(swarm.table())
    assert {served(get(proxy, "s.com")) for _ in range(12)} == tasks  # no cookie: balanced
    browser = Browser(proxy, "s.com")
    first = browser.get()
    assert re.fullmatch(rf"SID=[0-9a-f]{{16}}~{first}", browser.cookie), browser.cookie  # the task's prefix
    assert {browser.get() for _ in range(50)} == {first}
    swarm.remove(first)
    assert proxy.apply(swarm.table()).how == "runtime"
    moved = [browser.get() for _ in range(50)]
    assert len(set(moved)) == 1 and moved[0] in tasks - {first}, moved
    with open(proxy.haproxy.files.config) as handle:
        config = handle.read()
    assert "cookie SID prefix nocache dynamic" in config and "dynamic-cookie-key " in config


def test_sticky_cookie_names_the_same_task_on_every_replica(proxy, backends, tmp_path, haproxy_binary):
    """Two proxy replicas that saw the tasks arrive in different orders (so their slots differ)
    still send one session to one task: the cookie is a keyed hash of the task's address."""
    swarm = Swarm(backends).service("s", hosts="s.com", sticky_session_cookie="SID")
    for i in range(3):
        swarm.task(f"s{i}", "s")
    proxy.apply(swarm.table())
    other = second_replica(proxy, tmp_path, haproxy_binary)
    try:
        later = Swarm(backends)  # this replica saw the last task first, the others after it
        later.services, later.ports, later.tasks = swarm.services, swarm.ports, swarm.tasks[-1:]
        assert other.apply(later.table()).error is None
        later.tasks = swarm.tasks
        assert other.apply(later.table()).error is None
        (name,) = proxy.slots
        assert [s and s.task_id for s in proxy.slots[name]] != [s and s.task_id for s in other.slots[name]]
        browser = Browser(proxy, "s.com")
        first = browser.get()
        for _ in range(20):  # alternate replicas, as the L4 mesh may
            assert served(get(other, "s.com", "/session", {"Cookie": browser.cookie})) == first
            assert browser.get() == first
        # A task that arrives later is moved into a free slot at runtime: its cookie follows its
        # address there too (HAProxy recomputes a dynamic cookie on `set server addr`).
        added = swarm.task("s3", "s")
        later.tasks = swarm.tasks
        assert proxy.apply(swarm.table()).how == other.apply(later.table()).how == "runtime"
        for _ in range(40):
            browser = Browser(proxy, "s.com")
            if browser.get() == added:
                break
        assert browser.get() == added and all(
            served(get(other, "s.com", "/session", {"Cookie": browser.cookie})) == added for _ in range(10))
    finally:
        other.haproxy.kill()


def test_ip_hash_sends_each_client_address_to_one_task(proxy, backends):
    swarm = Swarm(backends).service("h", hosts="h.com", ip_hash="true")
    tasks = {swarm.task(f"h{i}", "h") for i in range(4)}
    proxy.apply(swarm.table())
    chosen = {}
    for client in range(2, 18):
        source = f"127.0.1.{client}"
        seen = {served(get(proxy, "h.com", source=source)) for _ in range(8)}
        assert len(seen) == 1, (source, seen)
        chosen[source] = seen.pop()
    assert len(set(chosen.values())) >= 2 and set(chosen.values()) <= tasks
    leaving = chosen["127.0.1.2"]
    swarm.remove(leaving)
    assert proxy.apply(swarm.table()).how == "runtime"
    for source, task in chosen.items():  # consistent hashing: only the leaving task's clients move
        now = served(get(proxy, "h.com", source=source))
        assert now != leaving and (task == leaving or now == task)


def websocket(proxy, host: str, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.settings.http_port), timeout=5)
    upgrade(sock, host, path)
    return sock


def test_an_open_websocket_keeps_echoing_across_five_reloads(proxy, backends):
    swarm = Swarm(backends).service("ws", hosts="ws.com", websocket_endpoints="/ws")
    swarm.task("w1", "ws", websocket=True)
    proxy.apply(swarm.table())
    pid, reloads, _ = master(proxy)
    with websocket(proxy, "ws.com", "/ws/chat") as sock:
        assert echo(sock, "hello") == "w1:hello"
        for i in range(5):
            if i % 2 == 0:  # another labelled service comes and goes: a route change each time
                swarm.service("extra", hosts="extra.com")
                swarm.task(f"x{i}", "extra")
            else:
                swarm.services.pop("extra")
                swarm.remove(f"x{i - 1}")
            assert proxy.apply(swarm.table()).how == "reload"
            assert echo(sock, f"after reload {i + 1}") == f"w1:after reload {i + 1}"
    assert master(proxy) == (pid, reloads + 5, 0)
    with websocket(proxy, "ws.com", "/ws") as sock:  # and new ones go to the newest worker
        assert echo(sock, "new") == "w1:new"
    with open(proxy.haproxy.files.config) as handle:
        assert "http-request set-timeout tunnel 24h if { path /ws } || { path_beg /ws/ }" in handle.read()
