"""Pieces of the data-path benchmark (bench/data_path.py): the testbed with extra LB
namespaces, the clusters it plans, the servers in the task namespaces, the baseline rulesets,
and the load tools (wrk, a connect-time probe, parallel Python UDP senders).

Every namespace used here was created by the benchmark itself (the Testbed's prefix, checked
before anything runs in it); every address traffic is sent to is one of the testbed's own;
every process started is kept by PID and stopped by that PID; every loop and wait is bounded.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Optional

from ingressmesh import model
from ingressmesh.netns import Netns
from ingressmesh.plan import NamespacePlan, PlanOptions, plan_node
from ingressmesh.testbed.l7_probe import http_request
from ingressmesh.testbed.topology import TCP_PORT, UDP_PORT, TaskSpec, Testbed

import kubeproxy_style as kp
import l7_helpers as h

INGRESS_ID = "ingressnet0001"
APP_ID = "appnet00000001"
LB_KEY = "lb:" + APP_ID
PUBLISHED_TCP = 8080
TASK = TaskSpec("t1", 1, 1)  # the one task every measured path ends at (on node1)
TASK_APP, TASK_INGRESS = "10.0.1.11", "10.255.0.11"
# Where traffic may go: the testbed's own networks (underlay, ingress and app overlays).
ALLOWED = [ipaddress.ip_network(n) for n in ("10.99.0.0/24", "10.255.0.0/16", "10.0.1.0/24")]
_FILLER_VIP, _FILLER_TASK = int(ipaddress.IPv4Address("10.1.0.0")), int(ipaddress.IPv4Address("10.16.0.0"))


def checked(address: str) -> str:
    if not any(ipaddress.ip_address(address) in net for net in ALLOWED):
        raise ValueError(f"{address}: the data-path bench only sends to the testbed's own networks")
    return address


@dataclasses.dataclass(frozen=True)
class ExtraLb:
    """One more load-balancer namespace on the app overlay, built like the testbed's own."""
    key: str  # "im1000", "kp10000", ...
    kind: str  # "ingressmesh", "kube-proxy-style" or "iptables-linear"
    others: int  # other services loaded next to the measured one
    address: str  # its address on the app overlay (the SNAT source towards the task)
    vip: str  # the measured service's VIP, routed from client 1 via this namespace


class BenchTestbed(Testbed):
    """The conformance Testbed; its Python echo servers are replaced by HAProxy (started by
    the benchmark, in t1 only) and a UDP sink, so the servers are never the bottleneck."""
    __test__ = False

    def _start_echo(self, ns: str, name: str) -> None:
        pass

    def own(self, ns: str) -> str:
        if not ns.startswith(self.prefix + "-") or ns not in self.namespaces:
            raise ValueError(f"{ns} is not a namespace of this benchmark")
        return ns

    def exec_argv(self, ns: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.own(ns), *argv]

    def run(self, ns: str, argv: list[str], stdin: Optional[str] = None, timeout: float = 60,
            check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.exec_argv(ns, argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} in {ns}: {done.stderr.strip()[-500:]}")
        return done

    def extra_lb_ns(self, key: str) -> str:
        return f"{self.prefix}-{key}"

    def add_extra_lb(self, index: int, lb: ExtraLb) -> str:
        """A namespace on the app bridge exactly like the testbed's LB namespaces (same veth
        to the same bridge, no redirects, forwarding on) and a /32 route to its VIP in client 1."""
        ns = self._netns(self.extra_lb_ns(lb.key))
        self._attach(ns, "eth0", "app", f"a-x{index}", f"{lb.address}/24")
        self._sysctl(ns, "net.ipv4.conf.all.send_redirects", "0")
        self._sysctl(ns, "net.ipv4.conf.eth0.send_redirects", "0")
        self._sysctl(ns, "net.ipv4.ip_forward", "1")
        self._ip("-n", self.client_ns(1), "route", "add", f"{lb.vip}/32", "via", lb.address)
        return ns

    def add_router(self, client: int, address: str, ingress_address: str) -> str:
        """A diagnostic path: client `client` reaches the task's ingress-network address through
        one more namespace that only routes (no netfilter at all, so no conntrack), and the task
        answers that client through it too.  Same extra hop as the VIP path, minus conntrack,
        NAT and rules."""
        ns = self._netns(f"{self.prefix}-fwd")
        self._attach(ns, "eth0", "app", "a-fwd", f"{address}/24")
        self._attach(ns, "eth1", "ingr", "i-fwd", f"{ingress_address}/16")
        self._sysctl(ns, "net.ipv4.ip_forward", "1")
        self._ip("-n", self.client_ns(client), "route", "add", f"{TASK_INGRESS}/32", "via", address)
        self._ip("-n", self.task_ns(TASK.name), "route", "add", f"{self.client_address(client)}/32",
                 "via", ingress_address, "dev", "eth0")
        return ns

    def tune_client(self, ns: str) -> dict:
        """A load generator's usual settings, in the two client namespaces only: a wide port
        range and TIME_WAIT reuse, so tens of thousands of connections per second never run
        out of source ports."""
        settings = {"net.ipv4.ip_local_port_range": "1024 65535", "net.ipv4.tcp_tw_reuse": "1"}
        for key, value in settings.items():
            self._sysctl(self.own(ns), key, value)
        return settings


# -- the clusters ------------------------------------------------------------------------------
def filler_vip(index: int) -> str:
    return str(ipaddress.IPv4Address(_FILLER_VIP + index))


def filler_task(index: int, endpoint: int, endpoints: int) -> str:
    return str(ipaddress.IPv4Address(_FILLER_TASK + index * endpoints + endpoint))


def cluster(bed: Testbed, vip: str, others: int, endpoints: int, node1_lb: Optional[str] = None) -> model.Cluster:
    """The measured service `bench` (VIP `vip`, tcp 8080 -> 80 published, one task: t1 on node1)
    and `others` VIP services with `endpoints` running tasks each, on the testbed's two nodes.
    The app network's subnet is 10.0.0.0/8 in the model so 10,000 x 10 addresses fit; only
    the measured service's addresses exist in the kernel.  `node1_lb` replaces node1's LB
    address (to plan one of the extra LB namespaces as node1's)."""
    nodes = tuple(model.Node(id=f"node{i}", hostname=f"node{i}", address=bed.node_address(i),
                             role="manager" if i == 1 else "worker") for i in (1, 2))
    app_lbs = {1: node1_lb or bed.lb_address(1), 2: bed.lb_address(2)}
    networks = (
        model.Network(id=INGRESS_ID, name="ingress", subnet="10.255.0.0/16", ingress=True,
                      lb_addresses=tuple(model.NodeAddress(f"node{i}", bed.ingress_address(i)) for i in (1, 2))),
        model.Network(id=APP_ID, name="app", subnet="10.0.0.0/8",
                      lb_addresses=tuple(model.NodeAddress(f"node{i}", a) for i, a in app_lbs.items())),
    )
    bench = model.Service(id="svcbench", name="bench", vips=(model.VirtualIP(APP_ID, vip),),
                          ports=(model.PublishedPort("tcp", PUBLISHED_TCP, TCP_PORT),))
    tasks = [model.Task(id="t1", service_id="svcbench", node_id="node1", slot=1,
                        addresses=(model.NetworkAddress(INGRESS_ID, TASK_INGRESS),
                                   model.NetworkAddress(APP_ID, TASK_APP)))]
    services = [bench]
    for s in range(others):
        services.append(model.Service(id=f"svc{s:06d}", name=f"other{s}", vips=(model.VirtualIP(APP_ID, filler_vip(s)),)))
        tasks += [model.Task(id=f"o{s:06d}-{e}", service_id=f"svc{s:06d}", node_id=f"node{1 + (s + e) % 2}", slot=e + 1,
                             addresses=(model.NetworkAddress(APP_ID, filler_task(s, e, endpoints)),))
                  for e in range(endpoints)]
    return model.Cluster(nodes=nodes, networks=networks, services=tuple(services), tasks=tuple(tasks))


def lb_plan(cl: model.Cluster) -> NamespacePlan:
    plan = plan_node(cl, "node1", PlanOptions(now=time.time()))
    found = plan.namespace(LB_KEY)
    if found is None:
        raise RuntimeError(f"no {LB_KEY} in node1's plan: {plan.warnings}")
    return found


# -- the baselines -----------------------------------------------------------------------------
def kube_proxy_scripts(plan: NamespacePlan, snat: str, chunk: int = 1000) -> list[str]:
    """bench/kubeproxy_style.py's table for the plan's VIPs (port 80: the measured port), plus
    the source NAT every LB namespace needs so replies come back through it, as transactions
    of `chunk` services each: the same ruleset, but loading 10,000 x 10 takes ~16 s this way
    instead of ~120 s in one transaction (what bench/control_plane.py measures)."""
    assert kp.PORT == TCP_PORT
    services = kp.services_from_plan(plan)
    head = kp.full_script([])
    scripts = [head + f"add chain ip {kp.TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
               + f"add rule ip {kp.TABLE} postrouting ct status dnat snat ip to {snat}\n"]
    for start in range(0, len(services), chunk):
        whole = kp.full_script(services[start:start + chunk])
        if not whole.startswith(head):
            raise RuntimeError("kubeproxy_style.full_script changed shape: its header is not a prefix")
        scripts.append(whole[len(head):])
    return scripts


def linear_rules(others: int, endpoints: int, vip: str, snat: str) -> str:
    """iptables-restore input: one nat rule per service in one chain, the measured service
    last (the worst case: every SYN to it is compared with every other service first).
    A service's tasks are consecutive addresses here, so one DNAT range rule picks among them."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":SERVICES - [0:0]", "-A PREROUTING -j SERVICES"]
    for s in range(others):
        lines.append(f"-A SERVICES -d {filler_vip(s)}/32 -j DNAT --to-destination "
                     f"{filler_task(s, 0, endpoints)}-{filler_task(s, endpoints - 1, endpoints)}")
    lines.append(f"-A SERVICES -d {vip}/32 -j DNAT --to-destination {TASK_APP}")
    lines.append(f"-A POSTROUTING -m conntrack --ctstate DNAT -j SNAT --to-source {snat}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


# -- servers -----------------------------------------------------------------------------------
HAPROXY_CONFIG = """global
    nbthread 1
    maxconn 8000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    maxconn 8000

frontend task
    bind :{port} backlog 8192
    http-request return status 200 content-type text/plain lf-string "%[dst]"
"""


# Long-lived processes of this bench (the task's HAProxy master): their CPU is the bench's own
# when the CPU used by other processes on the machine meanwhile is worked out.
OWN_PIDS: list[int] = []


def own_cpu_ns() -> int:
    """CPU time of this process, its reaped children (wrk, the UDP senders) and OWN_PIDS."""
    return h.own_ns() + sum(h.cpu_ns(pid) for pid in OWN_PIDS)


def start_haproxy(bed: BenchTestbed, procs: h.Processes, binary: str, workdir: str, ns: str) -> object:
    """HAProxy in the task namespace answering every request itself with the address it was
    reached on (a fixed, small body): it names the path's last hop and has no upstream."""
    path = os.path.join(workdir, "task.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HAPROXY_CONFIG.format(port=TCP_PORT))
    log = open(os.path.join(workdir, "task.log"), "wb")  # noqa: SIM115 - kept with the process
    proc = procs.start(bed.exec_argv(ns, [binary, "-W", "-db", "-f", path]), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            status, _ = http_get(bed, bed.client_ns(1), TASK_APP, TCP_PORT, timeout=0.5)
            if status == 200:
                OWN_PIDS.append(proc.pid)
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"haproxy in {ns} did not start: {h.tail(log.name)}")
        time.sleep(0.05)


def udp_sink(bed: BenchTestbed, ns: str) -> socket.socket:
    """A bound UDP socket in the task namespace that is never read: every datagram is carried
    all the way to the socket (then dropped as its buffer is full), no reply, no process."""
    with Netns.from_ref(bed.own(ns)).entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("0.0.0.0", UDP_PORT))
    return sock


# -- probes ------------------------------------------------------------------------------------
def http_get(bed: BenchTestbed, ns: str, address: str, port: int, timeout: float = 2.0) -> tuple[int, str]:
    """One HTTP/1.1 request on a fresh connection from `ns`; (status, body)."""
    answer = http_request(bed.own(ns), checked(address), port, "bench", timeout=timeout)
    return answer.status, answer.body.strip()


def connect_times(bed: BenchTestbed, ns: str, address: str, port: int, count: int,
                  budget_s: float = 20.0) -> dict:
    """Time `count` TCP connects in a row from `ns` (SYN out to SYN-ACK back: the first
    packet's trip through every rule on the path); each closed with a reset (SO_LINGER 0) so
    no TIME_WAIT is left behind.  Bounded by `count` and `budget_s`."""
    checked(address)
    samples, failures = [], 0
    deadline = time.monotonic() + budget_s
    linger = (1).to_bytes(4, sys.byteorder) + (0).to_bytes(4, sys.byteorder)
    with Netns.from_ref(bed.own(ns)).entered():
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(2.0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                started = time.perf_counter_ns()
                sock.connect((address, port))
                samples.append((time.perf_counter_ns() - started) / 1000)
            except OSError:
                failures += 1
            finally:
                sock.close()
    return {"n": len(samples), "failures": failures, **percentiles_us(samples)}


def percentiles_us(samples: list[float]) -> dict:
    if not samples:
        return {"p50_us": None, "p99_us": None}
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered), 1),
            "p99_us": round(ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))], 1)}


def wrk_argv(address: str, port: int, connections: int, duration: int, keepalive: bool = False) -> list[str]:
    """wrk with one request per connection, or (keepalive) requests on kept connections."""
    close = [] if keepalive else ["-H", "Connection: close"]
    return ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", *close,
            f"http://{checked(address)}:{port}/"]


def run_wrk(bed: BenchTestbed, ns: str, argv: list[str], duration: float) -> dict:
    """wrk in `ns`; its numbers plus the whole machine's CPU time per request meanwhile."""
    before, own, started = h.cpu_stat(), own_cpu_ns(), time.perf_counter()
    done = subprocess.run(bed.exec_argv(ns, argv), capture_output=True, text=True, timeout=duration + 30, check=False)
    after, own, wall = h.cpu_stat(), own_cpu_ns() - own, time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-300:]}")
    result = h.parse_wrk(done.stdout)
    if result["requests"] == 0:
        raise RuntimeError("wrk completed no request: " + done.stdout[-300:])
    result.update(cpu_per_unit(before, after, result["requests"]))
    result["other_percent"] = h.other_percent(before, after, own)
    result["wall_s"] = round(wall, 2)
    return result


def cpu_per_unit(before: list[int], after: list[int], units: int) -> dict:
    """Busy CPU time of the whole machine (user+nice+system+irq+softirq, all cores) per unit,
    its kernel part (system+irq+softirq: the packet path, and the syscalls of wrk, the server
    and the senders), and how busy the machine was: on 2 cores they all share it."""
    delta = [b - a for a, b in zip(before, after)]
    busy = delta[0] + delta[1] + delta[2] + delta[5] + delta[6]
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    kernel = delta[2] + delta[5] + delta[6]
    return {"cpu_us_per_unit": round(busy * tick_us / max(1, units), 2),
            "kernel_us_per_unit": round(kernel * tick_us / max(1, units), 2),
            "steal_percent": h.steal_percent(before, after),
            "busy_percent": round(100.0 * busy / max(1, sum(delta)), 1),
            "softirq_percent": round(100.0 * delta[6] / max(1, sum(delta)), 1)}


def rx_packets(bed: BenchTestbed, ns: str, ifname: str) -> int:
    """Packets received on `ifname` in `ns` (/proc/thread-self/net/dev of a thread inside it)."""
    with Netns.from_ref(bed.own(ns)).entered():
        with open("/proc/thread-self/net/dev", encoding="ascii") as handle:
            text = handle.read()
    for line in text.splitlines()[2:]:
        name, _, fields = line.partition(":")
        if name.strip() == ifname:
            return int(fields.split()[1])
    raise RuntimeError(f"no interface {ifname} in {ns}")


# The UDP senders: K processes (forked), each a connected UDP socket sending small datagrams
# as fast as Python can from `start_at` (CLOCK_MONOTONIC, shared by all processes) for
# `seconds`; bounded by time and by count.  Prints {"sent": N, "late": n, "errors": [...]}.
UDP_SENDER = r"""
import json, os, socket, sys, time
address, port, start_at, seconds, procs, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
MAX = 50_000_000
children = []
for _ in range(procs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sent, late, error = 0, 0, ""
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect((address, port))
            send, data, mono = sock.send, b"x" * size, time.monotonic
            if mono() > start_at:
                late = 1
            while mono() < start_at:
                time.sleep(0.0005)
            end = start_at + seconds
            while sent < MAX:
                try:
                    for _ in range(256):
                        send(data)
                    sent += 256
                except OSError as err:
                    error = repr(err)
                if mono() >= end:
                    break
        except Exception as err:
            error = repr(err)
        os.write(w, json.dumps({"sent": sent, "late": late, "error": error}).encode())
        os._exit(0)
    os.close(w)
    children.append((pid, r))
total = {"sent": 0, "late": 0, "errors": []}
for pid, r in children:
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    one = json.loads(data or b'{"sent": 0, "late": 0, "error": "no report"}')
    total["sent"] += one["sent"]
    total["late"] += one["late"]
    if one["error"]:
        total["errors"].append(one["error"])
print(json.dumps(total))
"""


def udp_run(bed: BenchTestbed, client: str, address: str, procs: int, seconds: float, size: int = 18,
            ifname: str = "eth1") -> dict:
    """Datagrams per second that reach the task's interface while `procs` senders in `client`
    send to address:UDP_PORT; the rate is taken in the middle of the run (0.3 s in, 0.2 s
    before the end), CPU per packet from the whole machine over the same window."""
    checked(address)
    task_ns = bed.task_ns(TASK.name)
    whole_cpu, whole_own = h.cpu_stat(), own_cpu_ns()
    start_at = time.monotonic() + 0.5
    argv = bed.exec_argv(client, [sys.executable, "-c", UDP_SENDER, address, str(UDP_PORT), f"{start_at:.6f}",
                                  str(seconds), str(procs), str(size)])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(max(0.0, start_at + 0.3 - time.monotonic()))
        rx0, cpu0, t0 = rx_packets(bed, task_ns, ifname), h.cpu_stat(), time.perf_counter()
        time.sleep(max(0.1, start_at + seconds - 0.2 - time.monotonic()))
        rx1, cpu1, t1 = rx_packets(bed, task_ns, ifname), h.cpu_stat(), time.perf_counter()
        stdout, stderr = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"UDP senders exited {proc.returncode}: {stderr[-300:]}")
    other = h.other_percent(whole_cpu, h.cpu_stat(), own_cpu_ns() - whole_own)
    report = json.loads(stdout)
    received = rx1 - rx0
    result = {"pps": round(received / (t1 - t0)), "window_s": round(t1 - t0, 3), "received": received,
              "sent_total": report["sent"], "sent_pps": round(report["sent"] / seconds),
              "late_senders": report["late"], "send_errors": report["errors"][:3], "other_percent": other}
    result.update(cpu_per_unit(cpu0, cpu1, received))
    if received <= 0:
        raise RuntimeError(f"no datagram reached the task: {result}")
    return result
