"""The L7 layer on the real swarm lab: two proxy services (HAProxy in imlab/proxy tasks) kept
by `ingressmesh l7 deploy --watch`, requests from the client namespace through every node.
Tests 1-9 of the L7 issue, plus route-change latency."""
from __future__ import annotations

import json
import time

import pytest

from ingressmesh.lab import BUSYBOX_IMAGE, PYTHON_IMAGE
from ingressmesh.testbed.l7_probe import L7Load, http_request
from l7_helpers import (BLUE_PORT, BLUE_PROXY, DEFAULT_PROXY, HTTP_PORT, LB, every_node, healthy_replicas, labelled,
                        proxies_deployed, reload_counts, replica_get, replica_json, replicas, served_by_every_replica,
                        settled_replicas, time_until, wait_routed)
from swarm_helpers import NETWORK, create_service, node_number, remove_service, running_tasks, summary, wait_for, wait_running

SICK = "test ! -e /tmp/sick && hostname-server --check"
HEALTH = ("--health-interval", "1s", "--health-timeout", "2s", "--health-retries", "1", "--health-start-period", "0s")


def _answers(lab, host: str, count: int, port: int = HTTP_PORT):
    """`count` requests for `host`, through each node in turn."""
    nodes = lab.config.node_numbers
    for i in range(count):
        yield http_request(lab.client_netns(), lab.node_address(nodes[i % len(nodes)]), port, host)


def hostnames(lab, host: str, count: int, port: int = HTTP_PORT) -> dict:
    seen = {}
    for answer in _answers(lab, host, count, port):
        assert answer.status == 200, (host, answer)
        seen[answer.hostname] = seen.get(answer.hostname, 0) + 1
    return seen


def hostnames_until(lab, host: str, expected: set, count: int, timeout: float = 30.0) -> set:
    """Every hostname answering `host` through the nodes, asked in rounds of `count` until each of
    `expected` has answered: served by every replica does not mean each replica has heard of the
    service's every task yet (a second task may come with the next snapshot).  Every answer must
    be a 200 all along."""
    seen: set = set()
    other: list = []

    def all_answered():
        for answer in _answers(lab, host, count):
            if answer.status != 200:
                other.append(answer)
            seen.add(answer.hostname)
        return seen >= expected
    wait_for(f"{sorted(expected)} answering {host}", all_answered, timeout=timeout, interval=0.2)
    assert not other, other[:3]
    return seen


@pytest.fixture(scope="module")
def l7(mesh):
    yield from proxies_deployed(mesh)


@pytest.fixture(autouse=True)
def settled(l7):
    """Each test starts with both proxy services done rolling (the previous test's cleanup may
    have detached a network, l7extra, or a secret: a start-first update replaces the replicas)."""
    settled_replicas(l7.lab, DEFAULT_PROXY, 2)
    settled_replicas(l7.lab, BLUE_PROXY, 1)


def test_1_hosts_reach_only_their_service_unknown_hosts_404_or_default_backend(l7):
    lab = l7.lab
    labelled(lab, "l7a", "--replicas", "2", hosts="a.l7,www.a.l7", port="80")
    labelled(lab, "l7b", "--replicas", "1", hosts="b.l7", port="80")
    try:
        a_tasks, b_tasks = wait_running(lab, "l7a", 2), wait_running(lab, "l7b", 1)
        wait_routed(lab, "a.l7")
        wait_routed(lab, "b.l7")
        a_names = {t["container"] for t in a_tasks}
        assert hostnames_until(lab, "A.L7:8080", a_names, 12) == a_names
        assert set(hostnames(lab, "b.l7", 12)) == {t["container"] for t in b_tasks}
        assert [a.status for a in every_node(lab, "nobody.l7")] == [404, 404, 404]  # as Interlock answers
        labelled(lab, "l7fallback", "--replicas", "1", port="80", default_backend="true")
        fallback = wait_running(lab, "l7fallback", 1)
        wait_routed(lab, "nobody.l7")
        assert set(hostnames(lab, "nobody.l7", 6)) == {fallback[0]["container"]}
        assert set(hostnames(lab, "b.l7", 6)) == {t["container"] for t in b_tasks}
    finally:
        for name in ("l7a", "l7b", "l7fallback"):
            remove_service(lab, name)


def test_2_context_roots_rewrite_and_redirects(l7):
    lab = l7.lab
    labelled(lab, "ctx-root", image=PYTHON_IMAGE, hosts="c.l7", port="80")
    labelled(lab, "ctx-api", image=PYTHON_IMAGE, hosts="c.l7", port="80", context_root="/api", context_root_rewrite="true")
    labelled(lab, "ctx-v2", image=PYTHON_IMAGE, hosts="c.l7", port="80", context_root="/api/v2")
    labelled(lab, "ctx-old", hosts="old.l7,new.l7", port="80", redirects="http://old.l7,http://new.l7")
    try:
        tasks = {name: wait_running(lab, name, 1)[0]["container"] for name in ("ctx-root", "ctx-api", "ctx-v2", "ctx-old")}
        wanted = {"/api/x?q=1": (tasks["ctx-api"], "/x?q=1"), "/api/v2/z": (tasks["ctx-v2"], "/api/v2/z"),
                  "/apix": (tasks["ctx-root"], "/apix")}

        def every_replica_routes_each_root():  # ctx-root alone answers 200 for every path
            found = replicas(lab, DEFAULT_PROXY)
            for n, _, ip in found:
                for path, want in wanted.items():
                    answer = replica_get(lab, n, ip, "c.l7", path)
                    if (answer.hostname, answer.headers.get("x-path")) != want:
                        return False
            return bool(found)
        wait_for("context roots routed by every replica", every_replica_routes_each_root, timeout=60, interval=0.3)
        for path, want in wanted.items():
            for answer in every_node(lab, "c.l7", path):
                assert (answer.hostname, answer.headers["x-path"]) == want, path
        wait_routed(lab, "new.l7")
        for answer in every_node(lab, "old.l7", "/some/page?x=1"):
            assert answer.status == 302 and answer.headers["location"] == "http://new.l7/some/page?x=1"
        assert {a.status for a in every_node(lab, "new.l7")} == {200}
    finally:
        for name in ("ctx-root", "ctx-api", "ctx-v2", "ctx-old"):
            remove_service(lab, name)


def _share(lab, host: str, v2: set, count: int) -> float:
    seen = hostnames(lab, host, count)
    return sum(n for name, n in seen.items() if name in v2) / count


def test_3_canary_shares_follow_healthy_replicas(l7):
    lab = l7.lab
    labelled(lab, "canary-v1", "--replicas", "4", hosts="canary.l7", port="80")
    labelled(lab, "canary-v2", "--replicas", "1", hosts="canary.l7", port="80")
    try:
        wait_running(lab, "canary-v1", 4)
        v2 = {t["container"] for t in wait_running(lab, "canary-v2", 1)}
        wait_for("5 canary servers on every replica", lambda: all(
            sum(len(b["slots"]) for b in replica_json(lab, n, ip, "/v1/l7/state")[1]["backends"].values()
                if "canary-v1" in b["services"]) == 5 for n, _, ip in replicas(lab, DEFAULT_PROXY)), timeout=60, interval=0.3)
        share = _share(lab, "canary.l7", v2, 500)
        print(f"canary v2 (1 of 5 replicas): {share:.1%} of 500 requests")
        assert 0.12 <= share <= 0.28
        lab.docker(1, "service", "scale", "--detach", "canary-v2=4")
        v2 = {t["container"] for t in wait_running(lab, "canary-v2", 4)}
        wait_for("8 canary servers on every replica", lambda: all(
            sum(len(b["slots"]) for b in replica_json(lab, n, ip, "/v1/l7/state")[1]["backends"].values()
                if "canary-v2" in b["services"]) == 8 for n, _, ip in replicas(lab, DEFAULT_PROXY)), timeout=60, interval=0.3)
        share = _share(lab, "canary.l7", v2, 500)
        print(f"canary v2 (4 of 8 replicas): {share:.1%} of 500 requests")
        assert 0.40 <= share <= 0.60
    finally:
        remove_service(lab, "canary-v1")
        remove_service(lab, "canary-v2")


def test_4_backend_mode_vip_goes_through_the_vip_task_mode_to_tasks(l7):
    lab = l7.lab
    labelled(lab, "by-vip", "--replicas", "2", hosts="vip.l7", port="80", backend_mode="vip")
    labelled(lab, "by-task", "--replicas", "2", hosts="task.l7", port="80")
    try:
        vip_tasks, task_tasks = wait_running(lab, "by-vip", 2), wait_running(lab, "by-task", 2)
        wait_routed(lab, "vip.l7")
        wait_routed(lab, "task.l7")
        spec = json.loads(lab.docker(1, "service", "inspect", "by-vip").stdout)[0]
        network = lab.docker(1, "network", "inspect", "-f", "{{.ID}}", NETWORK).stdout.strip()
        vip = next(v["Addr"].split("/")[0] for v in spec["Endpoint"]["VirtualIPs"] if v["NetworkID"] == network)
        answers = [a for _ in range(4) for a in every_node(lab, "vip.l7")]
        assert {a.headers["x-upstream-addr"] for a in answers} == {f"{vip}:80"}
        # The VIP (L4) picks the task; HAProxy may reuse one server connection for many requests,
        # so one task can answer them all: only "a task of that service" is certain.
        assert {a.hostname for a in answers} <= {t["container"] for t in vip_tasks} and answers
        # Task mode: HAProxy balances over the task addresses themselves. The second task may reach
        # the backends a moment after the first answers, so collect (bounded) until both have.
        expected = {f"{t['addresses'][NETWORK]}:80" for t in task_tasks}
        upstreams = set()
        wait_for("both task addresses as upstreams",
                 lambda: upstreams.update(a.headers["x-upstream-addr"] for a in every_node(lab, "task.l7"))
                 or upstreams >= expected, timeout=20, interval=0.1)
        assert upstreams == expected
    finally:
        remove_service(lab, "by-vip")
        remove_service(lab, "by-task")


def test_5_each_service_cluster_has_its_own_proxy_service(l7):
    lab = l7.lab
    labelled(lab, "blue-app", hosts="blue.l7", port="80", service_cluster="blue")
    labelled(lab, "plain-app", hosts="plain.l7", port="80")
    try:
        wait_running(lab, "blue-app", 1)
        wait_running(lab, "plain-app", 1)
        wait_routed(lab, "blue.l7", services=(BLUE_PROXY,))
        wait_routed(lab, "plain.l7")
        (n, _, _), = settled_replicas(lab, BLUE_PROXY, 1)
        assert http_request(lab.client_netns(), lab.node_address(n), BLUE_PORT, "blue.l7").status == 200
        assert http_request(lab.client_netns(), lab.node_address(n), BLUE_PORT, "plain.l7").status == 404
        assert {a.status for a in every_node(lab, "blue.l7")} == {404}
        assert {a.status for a in every_node(lab, "plain.l7")} == {200}
    finally:
        remove_service(lab, "blue-app")
        remove_service(lab, "plain-app")


def _serving(lab, task_id: str, found: list) -> bool:
    """Whether any of the proxy replicas `found` would send a new request to the task (looked up
    once per trial by the caller: the lookup's docker calls would count in the time measured)."""
    for n, _, ip in found:
        state = replica_json(lab, n, ip, "/v1/l7/state")[1]
        if any(s["task_id"] == task_id and s.get("serving") == "active"
               for b in state["backends"].values() for s in b["slots"]):
            return True
    return False


def test_6_an_unhealthy_task_gets_no_new_requests_within_one_second_without_a_reload(l7):
    from test_mesh_health import _unhealthy_event_time
    import threading
    lab = l7.lab
    labelled(lab, "l7hc", "--replicas", "3", "--replicas-max-per-node", "1", "--health-cmd", SICK, *HEALTH,
             image=PYTHON_IMAGE, hosts="hc.l7", port="80")
    try:
        wait_for("3 healthy tasks", lambda: len(running_tasks(lab, "l7hc")) == 3, timeout=90, interval=0.3)
        wait_routed(lab, "hc.l7")
        before = reload_counts(lab, DEFAULT_PROXY)
        latencies, sick = [], set()
        for trial in range(10):
            tasks = wait_for("3 running tasks not made sick", lambda: (lambda t: t if len(t) == 3 else None)(
                [t for t in running_tasks(lab, "l7hc") if t["id"] not in sick]), timeout=90, interval=0.3)
            found_replicas = healthy_replicas(lab, DEFAULT_PROXY, 2)  # both, looked up once: see _serving
            for task in tasks:
                wait_for(f"{task['id']} served", lambda: _serving(lab, task["id"], found_replicas), timeout=30,
                         interval=0.1)
            task = sorted(tasks, key=lambda t: t["node"])[trial % 3]
            sick.add(task["id"])
            n, started, found = node_number(task), time.time(), {}
            watcher = threading.Thread(target=lambda: found.update(t=_unhealthy_event_time(lab, n, task["container"], started)))
            watcher.start()
            lab.docker(n, "exec", task["container"], "touch", "/tmp/sick")
            wait_for("task out of every proxy replica", lambda: not _serving(lab, task["id"], found_replicas),
                     timeout=20, interval=0.01)
            gone = time.time()
            watcher.join(30)
            assert "t" in found, f"no health_status: unhealthy event for {task['container']} on node{n}"
            latencies.append(gone - found["t"])
            print(f"trial {trial + 1}: unhealthy -> no new requests from any proxy replica in {latencies[-1] * 1000:.0f} ms")
        print(f"L7 health removal over 10 trials: {summary(latencies)}")
        assert max(latencies) < 1.0
        assert reload_counts(lab, DEFAULT_PROXY) == before  # same masters, no reload, same config generation
    finally:
        remove_service(lab, "l7hc")


def test_7_no_failed_request_through_scaling_updates_new_routes_and_a_new_network(l7):
    lab = l7.lab
    labelled(lab, "steady-l7", "--replicas", "2", "--health-cmd", "hostname-server --check", *HEALTH,
             "--update-order", "start-first", "--stop-grace-period", "10s", image=PYTHON_IMAGE, hosts="load.l7", port="80")
    try:
        wait_for("2 healthy tasks", lambda: len(running_tasks(lab, "steady-l7")) == 2, timeout=90, interval=0.3)
        wait_routed(lab, "load.l7")
        targets = [(lab.node_address(n), HTTP_PORT) for n in lab.config.node_numbers]
        steps = []
        with L7Load(lab.client_netns(), targets, "load.l7", pause=0.01) as load:
            def step(name, *docker_args, wait=None):
                lab.docker(1, *docker_args, timeout=180)
                if wait:
                    wait()
                steps.append((name, load.result.ok, len(load.result.failures), time.monotonic()))
            step("scale 2->6", "service", "scale", "--detach", "steady-l7=6",
                 wait=lambda: wait_for("6 tasks", lambda: len(running_tasks(lab, "steady-l7")) == 6, timeout=120, interval=0.5))
            time.sleep(2)
            step("scale 6->2", "service", "scale", "--detach", "steady-l7=2",
                 wait=lambda: wait_for("2 tasks", lambda: len(running_tasks(lab, "steady-l7")) == 2, timeout=120, interval=0.5))
            time.sleep(4)
            step("start-first rolling update", "service", "update", "--force", "--update-order", "start-first",
                 "--update-parallelism", "1", "steady-l7")
            time.sleep(4)
            step("new labelled service", "service", "create", "--detach", "--no-resolve-image", "--name", "newcomer",
                 "--network", NETWORK, "--label", f"{LB}hosts=newcomer.l7", "--label", f"{LB}port=80", BUSYBOX_IMAGE,
                 wait=lambda: wait_routed(lab, "newcomer.l7"))
            step("label edit", "service", "update", "--detach", "--label-add", f"{LB}hosts=load.l7,alias.l7", "steady-l7",
                 wait=lambda: wait_routed(lab, "alias.l7"))
            lab.docker(1, "network", "create", "--driver", "overlay", "l7extra")
            step("network added to the proxy service", "service", "create", "--detach", "--no-resolve-image",
                 "--name", "on-extra", "--network", "l7extra", "--label", f"{LB}hosts=extra.l7", "--label", f"{LB}port=80",
                 "--label", f"{LB}network=l7extra", BUSYBOX_IMAGE,
                 wait=lambda: wait_routed(lab, "extra.l7", timeout=180))
            time.sleep(3)
        result = load.result
        for name, ok, failed, at in steps:  # `at` on the clock of the failures' times
            print(f"after {name} (at {at:.1f}): {ok} ok, {failed} failed")
        print(f"L7 under churn: {result.ok} requests ok, {len(result.failures)} failed; tasks seen {dict(result.seen)}")
        print("rolled proxies:", *[line for line in lab.service_logs(DEFAULT_PROXY, tail=400).splitlines()
                                   if "no longer accepting" in line], sep="\n  ")
        assert result.ok > 500
        assert not result.failures, result.failures[:5]
        networks = json.loads(lab.docker(1, "service", "inspect", DEFAULT_PROXY).stdout)[0]["Spec"]["TaskTemplate"]["Networks"]
        extra = lab.docker(1, "network", "inspect", "-f", "{{.ID}}", "l7extra").stdout.strip()
        assert extra in {n["Target"] for n in networks}
    finally:
        for name in ("steady-l7", "newcomer", "on-extra"):
            remove_service(lab, name)
        wait_for("l7extra unused", lambda: lab.docker(1, "network", "rm", "l7extra", check=False).returncode == 0,
                 timeout=120, interval=1)


HOSTILE = {"semicolon": "a.l7;x", "newline": "a.l7\nfrontend evil", "quote": 'a.l7"', "hash": "a.l7#x",
           "braces": "a{b}.l7", "huge": "a" * 5000, "unicode": "\u00e4.l7"}


def test_8_hostile_labels_refuse_that_service_by_name_and_nothing_else(l7):
    lab = l7.lab
    labelled(lab, "good-l7", hosts="good.l7", port="80")
    names = []
    try:
        for kind, value in HOSTILE.items():
            client = lab.docker_client(1)
            try:
                client.api.create_service({"ContainerSpec": {"Image": BUSYBOX_IMAGE}, "Networks": [{"Target": NETWORK}]},
                                          name=f"hostile-{kind}", labels={f"{LB}hosts": value, f"{LB}port": "80"})
            finally:
                client.close()
            names.append(f"hostile-{kind}")
        labelled(lab, "hostile-port", hosts="port.l7", port="80; x")
        names.append("hostile-port")
        wait_running(lab, "good-l7", 1)
        wait_routed(lab, "good.l7")

        def refused_everywhere():
            for n, _, ip in replicas(lab, DEFAULT_PROXY):
                refused = {r["service"]: r["reason"] for r in replica_json(lab, n, ip, "/healthz")[1]["refused_services"]}
                if set(names) - set(refused):
                    return None
            return refused
        refused = wait_for("every hostile service refused by name", refused_everywhere, timeout=60, interval=0.3)
        for name in names:
            print(f"refused {name}: {refused[name]}")
        assert "com.docker.lb.port" in refused["hostile-port"] and "com.docker.lb.hosts" in refused["hostile-newline"]
        assert {a.status for a in every_node(lab, "good.l7")} == {200}
        for n, _, ip in replicas(lab, DEFAULT_PROXY):
            assert replica_json(lab, n, ip, "/v1/l7/state")[1]["last_error"] is None
    finally:
        for name in ["good-l7", *names]:
            remove_service(lab, name)


def test_9_host_publish_mode_passes_the_client_address_and_unique_request_ids(l7):
    lab = l7.lab
    labelled(lab, "blue-echo", image=PYTHON_IMAGE, hosts="echo.blue.l7", port="80", service_cluster="blue")
    try:
        wait_running(lab, "blue-echo", 1)
        wait_routed(lab, "echo.blue.l7", services=(BLUE_PROXY,))
        (n, _, _), = settled_replicas(lab, BLUE_PROXY, 1)
        answers = [http_request(lab.client_netns(), lab.node_address(n), BLUE_PORT, "echo.blue.l7") for _ in range(5)]
        forwarded = {a.headers["x-seen-x-forwarded-for"] for a in answers}
        print(f"host mode: the app saw X-Forwarded-For {forwarded} (the client is {lab.config.client_address})")
        assert forwarded == {lab.config.client_address}
        ids = [a.headers["x-seen-x-request-id"] for a in answers]
        assert len(set(ids)) == 5 and all(a.headers["x-request-id"] == i for a, i in zip(answers, ids))
    finally:
        remove_service(lab, "blue-echo")


def test_route_changes_reach_every_replica_within_one_second(l7):
    """Timed from the API's answer (the swarm event is committed before it answers) until every
    proxy replica, asked directly, serves the change."""
    lab = l7.lab
    labelled(lab, "moving", hosts="moving0.l7", port="80")
    fresh = [f"fresh{i}" for i in range(5)]
    for name in fresh:  # running, not labelled yet: labelling one makes a new labelled service
        create_service(lab, name, "--network", NETWORK)
    try:
        wait_running(lab, "moving", 1)
        for name in fresh:
            wait_running(lab, name, 1)
        wait_routed(lab, "moving0.l7")
        proxies = settled_replicas(lab, DEFAULT_PROXY, 2)  # looked up once: each probe is then only HTTP
        edits, new, removed = [], [], []
        for trial in range(1, 11):  # a host added to a routed service: a map edit, no reload
            host = f"moving{trial}.l7"
            lab.docker(1, "service", "update", "--detach", "--label-add", f"{LB}hosts={host}", "moving")
            edits.append(time_until(lambda: served_by_every_replica(lab, DEFAULT_PROXY, host, found=proxies), timeout=10))
        for name in fresh:  # a new labelled service: a new backend, a checked seamless reload
            lab.docker(1, "service", "update", "--detach", "--label-add", f"{LB}hosts={name}.l7",
                       "--label-add", f"{LB}port=80", name)
            new.append(time_until(lambda: served_by_every_replica(lab, DEFAULT_PROXY, f"{name}.l7", found=proxies),
                                  timeout=10))
        for name in fresh:  # a removed service: its routes go (404: no route for the host)
            remove_service(lab, name)
            removed.append(time_until(lambda: served_by_every_replica(lab, DEFAULT_PROXY, f"{name}.l7", status=404,
                                                                      found=proxies), timeout=10))
        print(f"label edit -> served by every proxy replica: {summary(edits)}")
        print(f"new labelled service -> served by every proxy replica: {summary(new)}")
        print(f"service removed -> 404 on every proxy replica: {summary(removed)}")
        assert max(edits) < 1.0 and max(new) < 1.0 and max(removed) < 1.0
    finally:
        for name in ["moving", *fresh]:
            remove_service(lab, name)


def test_metrics_healthz_and_lab_show_l7(l7):
    import subprocess
    import sys
    lab = l7.lab
    labelled(lab, "seen", "--replicas", "2", hosts="seen.l7", port="80")
    try:
        tasks = wait_running(lab, "seen", 2)
        wait_routed(lab, "seen.l7")
        hostnames(lab, "seen.l7", 6)
        n, _, ip = replicas(lab, DEFAULT_PROXY)[0]

        def metrics():
            from ingressmesh.netns import Netns
            import urllib.request
            with Netns.from_ref(lab.node_netns(n)).entered():
                return urllib.request.urlopen(f"http://{ip}:9403/metrics", timeout=3).read().decode()
        wanted = ("ingressmesh_l7_reloads_total", "ingressmesh_l7_runtime_commands_total", "ingressmesh_l7_routes",
                  'ingressmesh_l7_servers{backend="be:seen",state="active"} 2.0',
                  'haproxy_backend_http_requests_total{proxy="be:seen"}')
        # Served by every replica does not mean each has heard of both tasks yet: the second may
        # reach the controller's snapshot a poll later (CI at 51124c0 read the metrics before it).
        def seen_lines(text: str) -> list[str]:
            return [line for line in text.splitlines() if 'backend="be:seen"' in line]
        try:
            print("be:seen on the first read:", seen_lines(metrics()))
        except OSError as err:  # a diagnostic only: the wait below reads again
            print(f"first read of the metrics failed: {err}")

        def every_series():
            text = metrics()
            missing = [series for series in wanted if series not in text]
            assert not missing, (missing, seen_lines(text))
            return text
        wait_for("every series on the replica", every_series, timeout=15, interval=0.5)

        def shown_slots():
            shown = subprocess.run([sys.executable, "-m", "ingressmesh.lab", "show", "--lab-dir", lab.config.lab_dir,
                                    str(n), "--l7", "--json"], capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            return [s for doc in json.loads(shown.stdout).values() for b in doc["backends"].values() for s in b["slots"]
                    if s["service"] == "seen"]

        def both_tasks_shown():
            found = shown_slots()
            shown = sorted((s["task_id"], s["serving"]) for s in found)
            assert {s["task_id"] for s in found} == {t["id"] for t in tasks} and {
                s["serving"] for s in found} == {"active"}, (shown, sorted(t["id"] for t in tasks))
            return found
        wait_for("both tasks active in every proxy's state on the node", both_tasks_shown, timeout=15, interval=0.5)
        text_view = subprocess.run([sys.executable, "-m", "ingressmesh.lab", "show", "--lab-dir", lab.config.lab_dir,
                                    str(n), "--l7"], capture_output=True, text=True, timeout=60)
        print(text_view.stdout)
        assert "seen.l7/" in text_view.stdout and "active" in text_view.stdout
    finally:
        remove_service(lab, "seen")
