"""What the modules of tests/ipvs_swarm share: the `web` service every mesh is measured on, the
probes, the lab's namespaces, and who (Docker's IPVS or ours) counted which connection."""
from __future__ import annotations

import json
import os
import sys
import time

from ingressmesh.lab.images import SPECS
from ingressmesh.netns import Netns, NetnsError
from ingressmesh.testbed.docker_mesh import (STATS_SETTLE_SECONDS, connections_by_mesh, docker_state, fwmark_services,
                                             our_ipvs_dests)
from ingressmesh.testbed.swarm_probe import LoadGenerator, http_hostname
from ingressmesh.testbed.swarm_probe import spread as count_hostnames

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "swarm"))
from swarm_helpers import active_on_node, create_service, running_tasks, wait_for, wait_running  # noqa: E402

PORT = 8080
PER_NODE = 300
SLOW = 300  # seconds: anything Docker does under software emulation
# An agent's stop (its --on-stop cleanup included) gets 20 s on a real host (systemd's
# TimeoutStopSec); under emulation beside make test's host suites and another QEMU guest, three
# agents each started and stopped within 20 s were killed (a make test run): 6x here.
STOP_TIMEOUT = 120
# Every path answers with the task's hostname; /cgi-bin/peer adds the caller's address as the
# task sees it (busybox httpd's REMOTE_ADDR).  On SIGTERM it keeps serving DRAIN s before it exits,
# as an app that drains gracefully does (web's stop grace is STOP_GRACE): a mesh has that long to
# stop sending it new connections during a rolling update, the same for Docker's mesh and ours.
# (Without a drain one run saw 5 of 2,112 requests refused through ingressmesh and 1-3 through
# Docker's own mesh; with 3 s, a run beside other QEMU guests saw ingressmesh (nftables) send to
# a replaced task ~1.4 s after it exited: Swarm -> controller -> agents took ~4.4 s there.  With
# 8 s, CI's host (its emulation ~2.2x slower than this machine's) refused requests through every
# node for ~3 s mid-update at 4deb19f: print_update_timeline now says which task they met.)
DRAIN, STOP_GRACE = 15, "20s"
SERVER = (
    "mkdir -p /www/cgi-bin && hostname > /www/index.html && "
    "printf '#!/bin/sh\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\n%%s %%s\\\\n\" \"$(hostname)\" \"$REMOTE_ADDR\"\\n'"
    " > /www/cgi-bin/peer && chmod +x /www/cgi-bin/peer && "
    f"httpd -f -p 80 -h /www & trap 'sleep {DRAIN}; kill $! 2>/dev/null; exit 0' TERM INT; wait")


# --- probes ----------------------------------------------------------------------------------
REQUEST_TIMEOUT = 5.0  # seconds: one request under software emulation, with the lab busy


def http_get(netns: str, address: str, port: int, path: str = "/") -> str:
    return http_hostname(netns, address, port, REQUEST_TIMEOUT, path)


def spread(netns: str, address: str, port: int, count: int) -> dict[str, int]:
    return dict(count_hostnames(netns, address, port, count, REQUEST_TIMEOUT))


def ensure_image(lab, n: int, key: str) -> None:
    """Imports a lab image into node n unless it is there already (the rig has busybox and
    proxy in every node from `up`; an import costs about a minute per image and node under emulation)."""
    if lab.docker(n, "image", "inspect", "-f", "{{.Id}}", SPECS[key].tag, check=False).returncode != 0:
        lab.import_image(n, key)


# --- the lab's namespaces --------------------------------------------------------------------
def sbox(lab, n: int) -> Netns:
    return Netns(f"{lab.netns_dir(n)}/ingress_sbox")


def lb(lab, n: int, network_id: str) -> Netns:
    return Netns(f"{lab.netns_dir(n)}/lb_{network_id[:9]}")


def if_present(read, ns: Netns, absent):
    """read(ns), or `absent` when Docker has removed that namespace (a node left with no task on
    a network loses its lb_ namespace; the file stays behind, not a namespace any more)."""
    try:
        return read(ns)
    except NetnsError:
        return absent


def counts(lab, network_id: str) -> dict[str, dict[str, int]]:
    """Connections each mesh took so far, per node: through the published port and the VIP.
    Read until two reads a settle period apart agree (at most 6): on a busy host the kernel's
    IPVS estimator folds its per-CPU counters late (one run read 881 of 900 after one period)."""
    none = {"docker": 0, "ingressmesh": 0}
    previous = None
    for _ in range(6):
        time.sleep(STATS_SETTLE_SECONDS)
        current = {f"node{n}": {"port": connections_by_mesh(sbox(lab, n)),
                                "vip": if_present(connections_by_mesh, lb(lab, n, network_id), none)}
                   for n in lab.config.node_numbers}
        if current == previous:
            break
        previous = current
    return current


def delta(before: dict, after: dict, where: str, mesh: str) -> dict[str, int]:
    """Connections counted between two counts() per node.  A count that went down belongs to a
    namespace Docker removed or made anew in between (a node that lost or regained its last task
    of the network, a restarted dockerd): its counters started again from 0, so all it counts now
    was counted since."""
    return {node: (after[node][where][mesh] - before[node][where][mesh]
                   if after[node][where][mesh] >= before[node][where][mesh] else after[node][where][mesh])
            for node in after}


def assert_docker_took_them(docker: dict[str, int], ours: dict[str, int], nodes) -> None:
    """After a hand-back: Docker's services counted new connections on every node, ours none.
    At least one, not every one: with conn_reuse_mode=0 (Docker's setting) a new connection from a
    client port IPVS still holds a TIME_WAIT entry for reuses that entry uncounted, and the client's
    ports wrap after a long load (node3 counted 14 of 20 in CI, after the dockerd-restart test's
    connections through it).  That every request was answered, with our rules and IPVS
    destinations gone, is asserted by the callers."""
    assert sorted(docker) == [f"node{n}" for n in nodes], docker
    assert all(count >= 1 for count in docker.values()), f"a node's Docker services counted nothing: {docker}"
    assert set(ours.values()) <= {0}, f"our IPVS services still counted connections: {ours}"


def all_docker_state(lab, network_id: str) -> dict:
    found = {}
    for n in lab.config.node_numbers:
        for name, ns in (("node", Netns(lab.node_netns(n))), ("ingress_sbox", sbox(lab, n)),
                         ("lb", lb(lab, n, network_id))):
            found[f"node{n} {name}"] = if_present(docker_state, ns, "absent")
    return found


def settled_docker_state(lab, network_id: str, quiet: float = 5.0) -> dict:
    """all_docker_state once it has stayed the same for `quiet` s (bounded by SLOW): Docker itself
    may still be re-programming (a task rescheduled after a drain), and a comparison made across
    that would blame us for Docker's own change."""
    deadline = time.monotonic() + SLOW
    state = all_docker_state(lab, network_id)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        again = all_docker_state(lab, network_id)
        if again == state:
            return state
        state = again
    return state


def docker_mesh_lag(lab) -> dict[str, dict[str, list[str]]]:
    """Per node, how Docker's own IPVS service for web's published port (the mark its mangle rule
    gives port PORT in ingress_sbox) differs from web's running tasks: real servers it still
    holds and ones it lacks.  A hand-back can fail no request only once this is empty."""
    wanted = {t["addresses"]["ingress"] for t in running_tasks(lab, "web")}
    lag = {}
    for n in lab.config.node_numbers:
        ns = sbox(lab, n)
        rules = ns.run(["iptables-save", "-t", "mangle"]).stdout.splitlines()  # -j MARK --set-xmark 0x100/0xffffffff
        marks = [int(line.split("--set-xmark ")[1].split("/")[0], 0) for line in rules
                 if f"--dport {PORT} " in line and "--set-xmark" in line]
        dests = set(fwmark_services(ns).get(marks[0], {})) if marks else set()
        if dests != wanted:
            lag[f"node{n}"] = {"stale": sorted(dests - wanted), "missing": sorted(wanted - dests)}
    return lag


def print_node_pressure(lab, n: int, service_label: str = "") -> None:
    """For a container that never became ready: the guest's load and memory, node n's containers
    and each one's health-check log (what its probes answered), since a killed container's own
    logs may be empty (the rig's L7 proxy at f2cc920: four kills as unhealthy, no log line)."""
    with open("/proc/loadavg", encoding="ascii") as handle:
        print(f"load average: {handle.read().strip()}")
    with open("/proc/meminfo", encoding="ascii") as handle:
        print(" ".join(line.split(":")[0] + "=" + line.split()[1] + "kB" for line in handle
                       if line.startswith(("MemTotal", "MemAvailable"))))
    print(lab.docker(n, "ps", "-a", "--no-trunc", check=False).stdout)
    filters = ["--filter", f"label=com.docker.swarm.service.name={service_label}"] if service_label else []
    for cid in lab.docker(n, "ps", "-aq", *filters, check=False).stdout.split():
        health = lab.docker(n, "inspect", "-f", "{{.Name}} {{.State.Status}} {{json .State.Health}}", cid, check=False)
        print(f"health of {cid}: {(health.stdout or health.stderr).strip()[:3000]}")


def container_netns(lab, task: dict) -> str:
    """The network namespace of a task's container, seen from here (its PID's)."""
    n = int(task["node"].removeprefix("node"))
    pid = lab.docker(n, "inspect", "-f", "{{.State.Pid}}", task["container"]).stdout.strip()
    return f"/proc/{pid}/ns/net"


def tables_left(lab, network_id: str) -> list[str]:
    left = []
    for n in lab.config.node_numbers:
        for name, ns in (("node", Netns(lab.node_netns(n))), ("ingress_sbox", sbox(lab, n)),
                         ("lb", lb(lab, n, network_id))):
            if if_present(lambda ns: ns.run(["nft", "list", "table", "ip", "ingressmesh"]), ns, None):
                left.append(f"node{n} {name}")
    return left


def ensure_web(lab) -> dict:
    """web: 3 tasks (spread over the nodes) on an attachable overlay, published on 8080 (ingress mode).
    Made once per run: a module that finds it (made by an earlier one) takes it as it is."""
    lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", "ovl", check=False)
    if lab.docker(1, "service", "ls", "-q", "--filter", "name=web").stdout.strip():
        return web_state(lab, wait_running(lab, "web", 3, timeout=SLOW))
    # No --replicas-max-per-node: a start-first update needs room for a second task on a node
    # (Swarm's spread places the 3 replicas on the 3 nodes by itself).
    create_service(lab, "web", "--replicas", "3", "--network", "ovl",
                   "--publish", f"{PORT}:80", "--stop-grace-period", STOP_GRACE, command=("sh", "-c", SERVER))
    try:  # the first service of the run, on a fresh swarm (2 x SLOW)
        tasks = wait_running(lab, "web", 3, timeout=2 * SLOW)
    except AssertionError:
        print(lab.docker(1, "service", "ps", "--no-trunc", "web", check=False).stdout)
        for n in lab.config.node_numbers:
            print(f"node{n}:", lab.docker(n, "ps", "-a", check=False).stdout)
        raise
    return web_state(lab, tasks)


def web_state(lab, tasks: list[dict]) -> dict:
    """What the tests use of web: its running tasks, the overlay's ID and web's VIP on it."""
    network_id = lab.docker(1, "network", "inspect", "-f", "{{.ID}}", "ovl").stdout.strip()
    vip = [v["Addr"].split("/")[0] for v in inspect_web(lab)["Endpoint"]["VirtualIPs"]
           if v["NetworkID"] == network_id][0]
    return {"tasks": tasks, "network_id": network_id, "vip": vip}


def inspect_web(lab) -> dict:
    return json.loads(lab.docker(1, "service", "inspect", "web").stdout)[0]


def targets(lab) -> list[tuple[str, int]]:
    return [(lab.node_address(n), PORT) for n in lab.config.node_numbers]


def load_through_every_node(lab, seconds: float, during=None, nodes=None) -> tuple[int, list]:
    """Requests round robin through every node's published port (or those of `nodes`) while
    `during()` runs (and `seconds` more); (requests answered, failures: (time, target, error))."""
    aimed = [(lab.node_address(n), PORT) for n in nodes] if nodes else targets(lab)
    slow = []  # answered, but later than a 2 s client would have waited (printed, not failed)

    def probe(netns: str, address: str, port: int) -> str:
        # REQUEST_TIMEOUT, not 2 s: one nftables rolling update in CI, with the guest starved beside
        # make test's host suites (54 min for what takes 30 quiet), had 1 of 1934 requests time out.
        started = time.monotonic()
        try:
            return http_get(netns, address, port)
        finally:
            if time.monotonic() - started > 2:
                slow.append((round(time.monotonic() - started, 1), address))

    with LoadGenerator(lab.client_netns(), aimed, pause=0.02, limit=20000, probe=probe) as load:
        time.sleep(2)
        if during:
            during()
        time.sleep(seconds)
    result = load.result
    if slow:
        print(f"load: {len(slow)} of {result.ok + len(result.failures)} requests took over 2 s: {slow[:10]}")
    return result.ok, result.failures


def wait_routed(lab, web, backend: str) -> None:
    """Until every node sends new connections to each current task of web by our rules."""
    for n in lab.config.node_numbers:
        if backend == "nftables":
            check = lambda: all(active_on_node(lab, n, t["id"]) for t in web["tasks"])  # noqa: E731
        else:
            wanted = {t["addresses"]["ingress"] for t in web["tasks"]}
            check = lambda: any(set(dests) == wanted for dests in our_ipvs_dests(sbox(lab, n)).values())  # noqa: E731
        wait_for(f"node{n} routes every task of web ({backend})", check, timeout=SLOW, interval=1)


def running_when(lab, service: str, count: int, keep) -> list[dict]:
    """The service's running tasks when there are `count` and `keep(task)` holds for each (else
    []): a wait on the tasks themselves, since Swarm clears UpdateStatus when it takes an update
    (on its own, "no status" could mean "not begun")."""
    tasks = running_tasks(lab, service)
    return tasks if len(tasks) == count and all(keep(t) for t in tasks) else []


def update_done(lab) -> bool:
    status = inspect_web(lab).get("UpdateStatus") or {}
    return status.get("State") in (None, "completed")


def print_update_timeline(lab, since: float, failures: list, service: str = "web") -> None:
    """On a failed request during an update: every node's container events for `service` (start,
    kill, die) and each failure, in one wall-clock timeline, so the note can say whether a request
    met a replaced task that had stopped serving (kill + DRAIN) or a new one not yet serving."""
    shift = time.time() - time.monotonic()  # the load generator stamps failures with time.monotonic()
    lines = [(at + shift, f"request through {target[0]}:{target[1]} failed: {error}") for at, target, error in failures]
    for n in lab.config.node_numbers:
        done = lab.docker(n, "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                          "--filter", "type=container", "--filter", f"label=com.docker.swarm.service.name={service}",
                          "--format", "{{.TimeNano}} {{index .Actor.Attributes \"com.docker.swarm.task.id\"}} {{.Action}}",
                          check=False, timeout=60)
        for line in done.stdout.splitlines():
            nanos, task, action = (line.split(" ", 2) + ["", ""])[:3]  # an exec's action holds spaces
            if action.split(":")[0] in ("start", "kill", "die", "health_status"):
                lines.append((int(nanos) / 1e9, f"node{n}: {action} task {task[:12]}"))
    print(f"timeline of the {service} update (container events of every node, failed requests):")
    for at, what in sorted(lines):
        print(f"  {time.strftime('%H:%M:%S', time.gmtime(at))}.{int(at % 1 * 1000):03d} {what}")
