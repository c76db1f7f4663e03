"""Data-path benchmark: what a packet pays for ingressmesh's VIPs and routing mesh, measured with
real servers and real load in the conformance testbed's namespaces.  Needs root.

    .venv/bin/python bench/data_path.py [--quick] [--duration 3] [--rounds 5] [--connections 32]
                                        [--out bench/results/data_path.json]

On the Testbed (ingressmesh/testbed/topology.py: two nodes with host, ingress and LB
namespaces, tasks and clients on bridge "overlays"), ingressmesh is applied with its real
planner and nftables backend (as tests/kernel do) for a service `bench` whose one task, t1 on
node1, runs HAProxy answering every request itself.  New TCP connections (wrk, one request per
connection: `-H 'Connection: close'`) and connect times are measured, in every round, for:
  direct        client 1 -> the task's address on the app overlay
  vip           client 1 -> the service VIP via node1's LB namespace (10 other services)
  fast          client 1 -> the same VIP DNATed in client 1's own namespace (the VIP fast path,
                plan_containers.py; programmed only while this path runs)
  *_ka          direct, vip and fast again with keep-alive connections (requests per second)
  published     an outside client -> node1's published port (host -> ingress -> task)
  mesh          an outside client -> node2's published port (node2's ingress -> t1 on node1)
  published_kept / mesh_kept   the same two with the client's own address kept (no SNAT; the
                task routes its replies back through the ingress namespace that sent each
                connection: issue 21, bench/data_path_source.py; on only while these run)
  vip 1,000 / 10,000   the same VIP path through an LB namespace holding 1,000 / 10,000 other
                services x 10 endpoints (ingressmesh planner + backend)
  kube-proxy-style / iptables linear   the same path through an LB namespace holding 10,000
                other services as bench/kubeproxy_style.py's nft table / as one iptables rule
                per service in one chain (the measured service last); iptables linear also at 10
UDP datagrams per second, direct vs VIP, with parallel Python senders.  Variants alternate
within each round (the order rotates), medians over rounds.  Prints a table, writes JSON,
exits 1 only if a measurement failed (a goal not met is reported, not an exit status).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import data_path_helpers as d  # noqa: E402  (bench/ is not a package)
from data_path_source import SourceKept  # noqa: E402
import l7_helpers as h  # noqa: E402
from control_plane import machine_info  # noqa: E402
from ingressmesh.dataplane.apply import NodeApplier  # noqa: E402
from ingressmesh.dataplane.layout import Layout  # noqa: E402
from ingressmesh.netns import Netns  # noqa: E402
from ingressmesh.nft.backend import NftBackend  # noqa: E402
from ingressmesh.nft.kernel import KernelNft  # noqa: E402
from ingressmesh.plan import NodePlan, PlanOptions, plan_node  # noqa: E402
from ingressmesh.plan_containers import LocalContainer, plan_containers  # noqa: E402
from ingressmesh.testbed.topology import TCP_PORT  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "data_path.json")
ENDPOINTS = 10
GOALS = {"vip": 0.90, "mesh": 0.80, "flat": 0.95, "fast": 0.90}
ROUTER, ROUTER_INGRESS = "10.0.1.246", "10.255.0.246"  # the diagnostic routing-only namespace
# Where the fast path's cost goes (diagnostic rows, direct connections from client 1 with a
# table that only turns conntrack on, or conntrack plus a nat output hook that NATs nothing):
# fast - ctnat = the DNAT itself and the container table's rules; ctnat - ct = the nat hook's
# per-connection binding; ct - direct = connection tracking in the caller's namespace.
DIAG_TABLE = "imdiag"
DIAG_CT = ("table ip imdiag { chain out { type filter hook output priority 0; policy accept; "
           "ct state new counter; }\n}\n")
DIAG_CTNAT = ("table ip imdiag { chain out { type nat hook output priority -100; policy accept; "
              "ip daddr 10.0.1.250 counter; }\n}\n")


def build_variants(bed: d.BenchTestbed, sizes: list[int], baseline: int) -> tuple[list[dict], list[d.ExtraLb]]:
    """Every measured path: who sends, to what, and what the task must see as its address."""
    small, mid, large = sizes
    extra = [d.ExtraLb(f"im{mid}", "ingressmesh", mid, "10.0.1.241", "10.0.1.3"),
             d.ExtraLb(f"im{large}", "ingressmesh", large, "10.0.1.242", "10.0.1.4"),
             d.ExtraLb(f"kp{baseline}", "kube-proxy-style", baseline, "10.0.1.243", "10.0.1.5"),
             d.ExtraLb(f"lin{small}", "iptables-linear", small, "10.0.1.244", "10.0.1.6"),
             d.ExtraLb(f"lin{baseline}", "iptables-linear", baseline, "10.0.1.245", "10.0.1.7")]
    c1, ext = bed.client_ns(1), bed.ext_ns

    def v(key, label, client, address, port, body, fast=False, keepalive=False, diag="", kept=None):
        return {"key": key, "label": label, "client": client, "address": address, "port": port, "expect": body,
                "fast": fast, "keepalive": keepalive, "diag": diag, "kept": kept}
    variants = [v("direct", "(1) direct to the task", c1, d.TASK_APP, TCP_PORT, d.TASK_APP),
                v("vip", f"(2) VIP, node1 LB ns ({small} other services)", c1, "10.0.1.2", TCP_PORT, d.TASK_APP),
                v("fast", "(2f) VIP fast path, in client 1's own ns", c1, "10.0.1.2", TCP_PORT, d.TASK_APP, fast=True),
                v("ct", "(diag) direct, conntrack on in client 1's ns", c1, d.TASK_APP, TCP_PORT, d.TASK_APP,
                  diag=DIAG_CT),
                v("ctnat", "(diag) direct, conntrack + empty nat output", c1, d.TASK_APP, TCP_PORT, d.TASK_APP,
                  diag=DIAG_CTNAT),
                v("direct_ka", "(1k) direct, keep-alive", c1, d.TASK_APP, TCP_PORT, d.TASK_APP, keepalive=True),
                v("vip_ka", "(2k) VIP via the LB ns, keep-alive", c1, "10.0.1.2", TCP_PORT, d.TASK_APP,
                  keepalive=True),
                v("fast_ka", "(2fk) VIP fast path, keep-alive", c1, "10.0.1.2", TCP_PORT, d.TASK_APP, fast=True,
                  keepalive=True),
                v("published", "(3) published port, task's own node", ext, bed.node_address(1), d.PUBLISHED_TCP,
                  d.TASK_INGRESS),
                v("mesh", "(4) published port, other node (mesh)", ext, bed.node_address(2), d.PUBLISHED_TCP,
                  d.TASK_INGRESS),
                v("published_kept", "(3s) published port, client address kept", ext, bed.node_address(1),
                  d.PUBLISHED_TCP, d.TASK_INGRESS, kept=1),
                v("mesh_kept", "(4s) mesh, client address kept", ext, bed.node_address(2), d.PUBLISHED_TCP,
                  d.TASK_INGRESS, kept=2),
                v("routed", "(diag) via one more ns, routing only", bed.client_ns(2), d.TASK_INGRESS, TCP_PORT,
                  d.TASK_INGRESS)]
    labels = {"ingressmesh": "VIP, ingressmesh, {n:,} other services",
              "kube-proxy-style": "VIP, kube-proxy-style nft, {n:,} others",
              "iptables-linear": "VIP, iptables rule/service, {n:,} others"}
    for lb in extra:
        variants.append(v(lb.key, labels[lb.kind].format(n=lb.others), c1, lb.vip, TCP_PORT, d.TASK_APP))
    return variants, extra


class Run:
    """One benchmark run: the testbed, what was loaded into it, the servers, the samples."""

    def __init__(self, args, bed: d.BenchTestbed, procs: h.Processes, workdir: str):
        self.args, self.bed, self.procs, self.workdir = args, bed, procs, workdir
        self.sizes = [10, 100, 1000] if args.quick else [10, 1000, 10000]
        self.baseline = self.sizes[-1]
        self.variants, self.extra = build_variants(bed, self.sizes, self.baseline)
        self.loads: dict = {}
        self.failures: list[str] = []
        self.sink = None
        # The fast path: client 1's namespace programmed as a container on node1, only while the
        # "fast" variant runs (the others from client 1 go through the LB namespace).
        self.fast = NodeApplier(Layout(containers={"c1": bed.client_ns(1)}))
        self.fast_plan: Optional[NodePlan] = None
        self.kept: Optional[SourceKept] = None  # the client's address kept, only while a kept path runs

    def prepare(self, v: dict) -> None:
        """Program what path `v` needs and nothing the others must not have."""
        self.fast_path(v.get("fast", False), v.get("diag", ""))
        self.kept.switch(v.get("kept"))

    def fast_path(self, on: bool, diag: str = "") -> None:
        """Program client 1's namespace as a container (or not).  The fast-path runs also use
        their own half of client 1's ephemeral ports: the task keeps every closed connection in
        TIME_WAIT, and a SYN for the same 4-tuple dialled through the VIP carries timestamps
        with another offset (the client derives it from the address it dialled) than the direct
        run's, which the task's PAWS check refuses (1 s SYN retries): a benchmark artefact of
        alternating the two from one client, not a cost of either path."""
        report = self.fast.apply(self.fast_plan if on else NodePlan(node_id="node1", namespaces=()))
        ns = self.bed.client_ns(1)
        self.bed.run(ns, ["nft", "-f", "-"], stdin=f"table ip {DIAG_TABLE}\ndelete table ip {DIAG_TABLE}\n")
        if diag:
            self.bed.run(ns, ["nft", "-f", "-"], stdin=diag)
        if not report.ok:
            raise RuntimeError(f"fast path: {report.errors}")
        ports = "46000 60999" if on else "32768 45999"
        self.bed.run(self.bed.client_ns(1), ["sysctl", "-qw", f"net.ipv4.ip_local_port_range={ports}"])

    # -- building and loading ------------------------------------------------------------------
    def setup(self) -> None:
        bed = self.bed
        tuned = {ns: bed.tune_client(ns) for ns in (bed.client_ns(1), bed.client_ns(2), bed.ext_ns)}
        self.loads["client_sysctls"] = {"clients 1, 2 and the outside client": next(iter(tuned.values()))}
        bed.add_router(2, ROUTER, ROUTER_INGRESS)
        for index, lb in enumerate(self.extra, 1):
            bed.add_extra_lb(index, lb)
        # ingressmesh on both nodes, as the agent applies it: host, ingress and LB namespaces.
        started = time.perf_counter()
        cluster = d.cluster(bed, "10.0.1.2", self.sizes[0], ENDPOINTS)
        appliers = {i: NodeApplier(Layout(host=bed.node_ns(i), ingress=bed.ingress_ns(i), lb=bed.lb_ns(i)))
                    for i in (1, 2)}
        for i, applier in appliers.items():
            report = applier.apply(plan_node(cluster, f"node{i}", PlanOptions(now=time.time())))
            if not report.ok:
                raise RuntimeError(f"node{i}: {report.errors}")
        self.kept = SourceKept(bed, appliers, cluster)
        app = next(vip.network_id for svc in cluster.services for vip in svc.vips if vip.address == "10.0.1.2")
        planned = plan_containers(plan_node(cluster, "node1", PlanOptions(now=time.time())),
                                  [LocalContainer("c1", "client1", (app,))])
        self.fast_plan = NodePlan(node_id="node1", namespaces=tuple(ns for ns in planned.namespaces
                                                                    if ns.role == "container"))
        self.loads["nodes"] = {"kind": "ingressmesh", "others": self.sizes[0], "seconds": _s(started)}
        for lb in self.extra:
            self.loads[lb.key] = self._load(lb)
            print(f"  loaded {lb.key}: {self.loads[lb.key]}", flush=True)
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        d.start_haproxy(bed, self.procs, haproxy, self.workdir, bed.task_ns(d.TASK.name))
        self.sink = d.udp_sink(bed, bed.task_ns(d.TASK.name))
        for v in self.variants:  # every path answers, and from the right address of t1
            self.prepare(v)
            status, body = d.http_get(bed, v["client"], v["address"], v["port"])
            if status != 200 or body != v["expect"]:
                raise RuntimeError(f"{v['key']}: expected 200 from {v['expect']}, got {status} {body!r}")
            if v.get("kept"):
                self.kept.check(v["kept"])
        self.prepare({})

    def _load(self, lb: d.ExtraLb) -> dict:
        ns = self.bed.extra_lb_ns(lb.key)
        started = time.perf_counter()
        if lb.kind == "iptables-linear":
            rules = d.linear_rules(lb.others, ENDPOINTS, lb.vip, lb.address)
            self.bed.run(ns, ["iptables-legacy-restore"], stdin=rules, timeout=600)
            seconds = _s(started)
            listed = self.bed.run(ns, ["iptables-legacy", "-t", "nat", "-S", "SERVICES"], timeout=120).stdout
            return {"kind": lb.kind, "others": lb.others, "seconds": seconds,
                    "rules_in_chain": sum(1 for line in listed.splitlines() if line.startswith("-A SERVICES"))}
        plan = d.lb_plan(d.cluster(self.bed, lb.vip, lb.others, ENDPOINTS, node1_lb=lb.address))
        planned = _s(started)
        if lb.kind == "ingressmesh":
            NftBackend(KernelNft(Netns.from_ref(ns))).apply(plan)
            table, element_map = "ingressmesh", "vip_services"
        else:
            scripts = d.kube_proxy_scripts(plan, lb.address)
            for script in scripts:
                self.bed.run(ns, ["nft", "-f", "-"], stdin=script, timeout=600)
            table, element_map = d.kp.TABLE, "services"
        seconds = _s(started)
        listed = self.bed.run(ns, ["nft", "-j", "list", "map", "ip", table, element_map], timeout=300).stdout
        elements = next((len(o["map"].get("elem", [])) for o in json.loads(listed)["nftables"] if "map" in o), 0)
        found = {"kind": lb.kind, "others": lb.others, "seconds": seconds, "plan_seconds": planned,
                 f"{element_map}_elements": elements}
        if lb.kind != "ingressmesh":
            found["transactions"] = len(scripts)
        return found

    # -- measuring -------------------------------------------------------------------------------
    def tcp_round(self, number: int, order: list[dict], results: dict) -> None:
        """direct, A, direct, B, ..., direct: every path is run between two direct runs, so
        it can be compared with what direct did just before and just after it."""
        a, direct = self.args, self.variants[0]
        sequence = [direct]
        for v in order:
            sequence += [v, direct]
        for position, v in enumerate(sequence):
            argv = d.wrk_argv(v["address"], v["port"], a.connections, a.duration, v["keepalive"])
            sample = {"round": number, "seq": position}
            try:
                self.prepare(v)
                sample.update(d.run_wrk(self.bed, v["client"], argv, a.duration))
                probe = d.connect_times(self.bed, v["client"], v["address"], v["port"], a.connects)
                sample["connect"] = probe
                if probe["n"] == 0:
                    raise RuntimeError(f"no connect succeeded ({probe['failures']} failed)")
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
                sample["error"] = str(err)[-500:]
                self.failures.append(f"{v['key']} round {number}: {sample['error']}")
            results[v["key"]]["samples"].append(sample)
            results[v["key"]]["wrk_argv"] = " ".join(argv)
            print(f"  round {number} {v['key']:<10} " + (f"error: {sample['error']}" if "error" in sample else
                  f"{sample['rps']:>9,.0f} conn/s  p50 {sample['p50_ms']:.2f} ms  connect p50 "
                  f"{sample['connect']['p50_us']:.0f} us  CPU {sample['cpu_us_per_unit']:.1f} us/conn  "
                  f"steal {sample['steal_percent']:.0f} %"), flush=True)

    def udp_round(self, number: int, results: dict) -> None:
        """direct, vip, direct, routed, direct (vip and routed swap places every round)."""
        a = self.args
        c1, c2 = self.bed.client_ns(1), self.bed.client_ns(2)
        direct = ("direct", c1, d.TASK_APP, "eth1")
        others = [("vip", c1, "10.0.1.2", "eth1"), ("routed", c2, d.TASK_INGRESS, "eth0")]
        others = others if number % 2 else others[::-1]
        for position, (key, client, address, ifname) in enumerate([direct, others[0], direct, others[1], direct]):
            sample = {"round": number, "seq": position}
            try:
                sample.update(d.udp_run(self.bed, client, address, a.udp_senders, a.udp_duration, ifname=ifname))
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
                sample["error"] = str(err)[-500:]
                self.failures.append(f"udp {key} round {number}: {sample['error']}")
            results[key]["samples"].append(sample)
            print(f"  round {number} udp {key:<7}" + (f"error: {sample['error']}" if "error" in sample else
                  f"{sample['pps']:>9,} pkt/s received (sent {sample['sent_pps']:,}/s)  "
                  f"CPU {sample['cpu_us_per_unit']:.2f} us/pkt  steal {sample['steal_percent']:.0f} %"), flush=True)

    def measure(self) -> dict:
        a = self.args
        tcp = {v["key"]: {"label": v["label"], "client": v["client"], "target": f"{v['address']}:{v['port']}",
                          "samples": []} for v in self.variants}
        print("warm-up: 1 s of wrk per path", flush=True)
        for v in self.variants:
            try:
                self.prepare(v)
                d.run_wrk(self.bed, v["client"], d.wrk_argv(v["address"], v["port"], a.connections, 1), 1)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as err:
                self.failures.append(f"warm-up {v['key']}: {err}")
        others = self.variants[1:]
        for r in range(1, a.rounds + 1):
            shift = (r - 1) % len(others)
            order = others[shift:] + others[:shift]
            self.tcp_round(r, order if r % 2 else order[::-1], tcp)
        udp = {"direct": {"target": f"{d.TASK_APP}:{d.UDP_PORT}", "samples": []},
               "vip": {"target": f"10.0.1.2:{d.UDP_PORT}", "samples": []},
               "routed": {"target": f"{d.TASK_INGRESS}:{d.UDP_PORT} via {ROUTER} (diagnostic)", "samples": []}}
        for r in range(1, a.rounds + 1):
            self.udp_round(r, udp)
        return {"tcp": tcp, "udp": udp}


def _s(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def _median(values: list) -> float | None:
    values = [x for x in values if x is not None]
    return round(statistics.median(values), 3) if values else None


def _neighbour_ratios(entries: dict, key: str, field: str) -> dict:
    """(round, seq) -> value of `key`'s run / mean of the direct runs just before and after it."""
    direct = {(s["round"], s["seq"]): s[field] for s in entries["direct"]["samples"] if "error" not in s}
    found = {}
    for s in entries[key]["samples"]:
        if "error" in s:
            continue
        around = [direct.get((s["round"], s["seq"] + step)) for step in (-1, 1)]
        around = [x for x in around if x]
        if around and key != "direct":
            found[(s["round"], s["seq"])] = s[field] / statistics.mean(around)
    return found


def summarize(measured: dict) -> dict:
    """Medians over all runs of each path.  x direct: ratio of the medians; paired: the median,
    over every run of the path, of its result divided by the mean of the two direct runs right
    before and after it (this cancels the machine's own drift, which is large on a shared VM)."""
    tcp = measured["tcp"]
    direct_rps = _median([s["rps"] for s in tcp["direct"]["samples"] if "error" not in s])
    summary = {}
    for key, entry in tcp.items():
        samples = [s for s in entry["samples"] if "error" not in s]
        if not samples:
            continue
        rps = _median([s["rps"] for s in samples])
        paired = list(_neighbour_ratios(tcp, key, "rps").values())
        summary[key] = {"n": len(samples), "rps": rps, "p50_ms": _median([s["p50_ms"] for s in samples]),
                        "p99_ms": _median([s["p99_ms"] for s in samples]),
                        "connect_p50_us": _median([s["connect"]["p50_us"] for s in samples]),
                        "connect_p99_us": _median([s["connect"]["p99_us"] for s in samples]),
                        "cpu_us_per_conn": _median([s["cpu_us_per_unit"] for s in samples]),
                        "kernel_us_per_conn": _median([s["kernel_us_per_unit"] for s in samples]),
                        "busy_percent": _median([s["busy_percent"] for s in samples]),
                        "softirq_percent": _median([s["softirq_percent"] for s in samples]),
                        "steal_percent": _median([s["steal_percent"] for s in samples]),
                        "steal_percent_max": max(s["steal_percent"] for s in samples),
                        "other_percent": _median([s["other_percent"] for s in samples]),
                        "other_percent_max": max(s["other_percent"] for s in samples),
                        "errors": sum(s["socket_errors"] + s["non_2xx"] for s in samples),
                        "x_direct": round(rps / direct_rps, 3) if direct_rps else None,
                        "x_direct_paired": 1.0 if key == "direct" else _median(paired),
                        "x_direct_paired_range": [round(min(paired), 3), round(max(paired), 3)] if paired else None}
    udp = {}
    entries = measured["udp"]
    direct_pps = _median([s["pps"] for s in entries["direct"]["samples"] if "error" not in s])
    for key, entry in entries.items():
        samples = [s for s in entry["samples"] if "error" not in s]
        if not samples:
            udp[key] = {"n": 0}
            continue
        pps = _median([s["pps"] for s in samples])
        paired = list(_neighbour_ratios(entries, key, "pps").values())
        udp[key] = {"n": len(samples), "pps": pps, "sent_pps": _median([s["sent_pps"] for s in samples]),
                    "cpu_us_per_packet": _median([s["cpu_us_per_unit"] for s in samples]),
                    "kernel_us_per_packet": _median([s["kernel_us_per_unit"] for s in samples]),
                    "other_percent": _median([s["other_percent"] for s in samples]),
                    "steal_percent": _median([s["steal_percent"] for s in samples]),
                    "delivered_fraction": _median([s["pps"] / max(1, s["sent_pps"]) for s in samples]),
                    "x_direct": round(pps / direct_pps, 3) if direct_pps else None,
                    "x_direct_paired": 1.0 if key == "direct" else _median(paired)}
    for key in ("vip", "routed"):
        if udp.get(key, {}).get("n") and udp["direct"].get("n"):
            udp[key]["extra_cpu_us_per_packet"] = round(udp[key]["cpu_us_per_packet"]
                                                        - udp["direct"]["cpu_us_per_packet"], 2)
            udp[key]["extra_kernel_us_per_packet"] = round(udp[key]["kernel_us_per_packet"]
                                                           - udp["direct"]["kernel_us_per_packet"], 2)
            udp[key]["kernel_x_direct"] = round(udp["direct"]["kernel_us_per_packet"]
                                                / udp[key]["kernel_us_per_packet"], 3)
    return {"tcp": summary, "udp": udp}


def _flat_paired(measured: dict, big: str, small: str) -> float | None:
    """Median over rounds of (big's direct-normalised ratio) / (small's), both from one round."""
    tcp = measured["tcp"]
    per_round: dict = {}
    for key in (big, small):
        for (rnd, _), ratio in _neighbour_ratios(tcp, key, "rps").items():
            per_round.setdefault(rnd, {})[key] = ratio
    return _median([r[big] / r[small] for r in per_round.values() if big in r and small in r])


def goals(summary: dict, measured: dict, sizes: list[int], quick: bool) -> dict:
    """Each goal judged on the paired ratio (each run against the direct runs next to it);
    the ratio of the plain medians is shown next to it."""
    tcp = summary["tcp"]
    small, large = sizes[0], sizes[-1]

    def verdict(goal, paired, plain, note=""):
        met = None if paired is None else paired >= goal
        return {"goal": f">= {goal}", "value": paired, "ratio_of_medians": plain, "met": met, "note": note}
    found = {"vip_vs_direct": verdict(GOALS["vip"], tcp.get("vip", {}).get("x_direct_paired"),
                                      tcp.get("vip", {}).get("x_direct")),
             "mesh_vs_direct": verdict(GOALS["mesh"], tcp.get("mesh", {}).get("x_direct_paired"),
                                       tcp.get("mesh", {}).get("x_direct")),
             "fast_path_vs_direct": verdict(GOALS["fast"], tcp.get("fast", {}).get("x_direct_paired"),
                                            tcp.get("fast", {}).get("x_direct"))}
    ka = {key: tcp.get(key, {}).get("rps") for key in ("direct_ka", "vip_ka", "fast_ka")}
    for key in ("vip_ka", "fast_ka"):  # keep-alive: each against direct keep-alive (ratio of medians)
        ratio = round(ka[key] / ka["direct_ka"], 3) if ka[key] and ka["direct_ka"] else None
        found[f"{key}_vs_direct_ka"] = verdict(GOALS["fast"] if key == "fast_ka" else GOALS["vip"], ratio, ratio,
                                               "keep-alive: ratio of the medians")
    big = tcp.get(f"im{large}", {}).get("rps")
    plain = round(big / tcp["vip"]["rps"], 3) if big and tcp.get("vip", {}).get("rps") else None
    found[f"vip_{large}_vs_{small}"] = verdict(GOALS["flat"], _flat_paired(measured, f"im{large}", "vip"), plain,
                                               "--quick: not the 10,000-service size" if quick else "")
    return found


def source_kept(summary: dict, measured: dict) -> dict:
    """The published-port paths with the client's address kept, as a ratio of the same path with
    SNAT (paired: per round, the two direct-normalised ratios divided, median over rounds) and
    of direct (paired, as every row)."""
    tcp, found = summary["tcp"], {}
    for kept, snat in (("published_kept", "published"), ("mesh_kept", "mesh")):
        if kept not in tcp or snat not in tcp:
            continue
        found[kept] = {"x_snat_path_paired": _flat_paired(measured, kept, snat),
                       "x_snat_path_medians": round(tcp[kept]["rps"] / tcp[snat]["rps"], 3),
                       "x_direct_paired": tcp[kept]["x_direct_paired"], "x_direct_medians": tcp[kept]["x_direct"],
                       "snat_path": snat}
    return found


def hop_costs(summary: dict, sizes: list[int]) -> dict:
    """What each extra piece of path costs, per connection: connect time (the handshake's round
    trip through it) and the machine's CPU time."""
    tcp, large, base = summary["tcp"], sizes[-1], sizes[0]

    def diff(a, b):
        if a not in tcp or b not in tcp:
            return None
        out = {}
        for field in ("connect_p50_us", "cpu_us_per_conn", "kernel_us_per_conn", "p50_ms"):
            x, y = tcp[a].get(field), tcp[b].get(field)
            out[field] = round(x - y, 2) if x is not None and y is not None else None
        return out
    costs = {"vip_minus_direct": diff("vip", "direct"), "fast_minus_direct": diff("fast", "direct"),
             "vip_minus_fast": diff("vip", "fast"),
             "ct_minus_direct": diff("ct", "direct"), "ctnat_minus_ct": diff("ctnat", "ct"),
             "fast_minus_ctnat": diff("fast", "ctnat"), "fast_ka_minus_direct_ka": diff("fast_ka", "direct_ka"),
             "routed_minus_direct": diff("routed", "direct"),
             "vip_minus_routed": diff("vip", "routed"), "published_minus_direct": diff("published", "direct"),
             "mesh_minus_published": diff("mesh", "published"), "mesh_minus_direct": diff("mesh", "direct"),
             "published_kept_minus_published": diff("published_kept", "published"),
             "mesh_kept_minus_mesh": diff("mesh_kept", "mesh"),
             f"im{large}_minus_vip": diff(f"im{large}", "vip"),
             f"kp{large}_minus_im{large}": diff(f"kp{large}", f"im{large}"),
             f"lin{large}_minus_lin{base}": diff(f"lin{large}", f"lin{base}")}
    linear = costs[f"lin{large}_minus_lin{base}"]
    if linear and linear["connect_p50_us"] is not None and large > base:
        costs["linear_ns_per_rule_on_the_syn"] = round(linear["connect_p50_us"] * 1000 / (large - base), 1)
    return costs


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(results: dict) -> str:
    m, p = results["machine"], results["parameters"]
    tcp, udp = results["summary"]["tcp"], results["summary"]["udp"]
    lines = [f"machine: {m['nproc']} cores ({m['cpu']}), kernel {m['kernel']}, {m['nft_version']}, "
             f"{m['wrk']}, {m['haproxy']}; load average at start {m['loadavg_at_start']}",
             f"new TCP connections: wrk -t1 -c{p['connections']} -d{p['duration_s']}s -H 'Connection: close' "
             f"(one request per connection); {p['rounds']} rounds of direct, A, direct, B, ..., direct (order "
             f"rotating); medians over runs; connect = {p['connects']} sequential connects after each run",
             "x direct: each run / the mean of the direct runs just before and after it, median (min-max); "
             "x medians: ratio of the plain medians",
             "",
             f"{'path':<50}{'conn/s':>8}{'x direct (min-max)':>20}{'x medians':>10}{'p50/p99 ms':>14}"
             f"{'connect p50/p99 us':>19}{'CPU (kernel) us/conn':>21}{'steal/other %':>14}"]
    for v in results["variants"]:
        row = tcp.get(v["key"])
        if not row:
            lines.append(f"{v['label']:<50}  measurement failed")
            continue
        spread = row.get("x_direct_paired_range")
        spread = f" ({spread[0]:.2f}-{spread[1]:.2f})" if spread else ""
        lines.append(f"{v['label']:<50}{_fmt(row['rps'], ',.0f'):>8}"
                     f"{_fmt(row.get('x_direct_paired'), '.2f') + spread:>20}{_fmt(row.get('x_direct'), '.2f'):>10}"
                     f"{_fmt(row['p50_ms'], '.2f') + ' / ' + _fmt(row['p99_ms'], '.2f'):>14}"
                     f"{_fmt(row['connect_p50_us'], '.0f') + ' / ' + _fmt(row['connect_p99_us'], '.0f'):>19}"
                     f"{_fmt(row['cpu_us_per_conn'], '.1f') + ' (' + _fmt(row['kernel_us_per_conn'], '.1f') + ')':>21}"
                     f"{_fmt(row['steal_percent'], '.0f') + ' / ' + _fmt(row['other_percent'], '.0f'):>14}")
    lines += ["", f"UDP ({p['udp_senders']} Python sender processes, {p['udp_payload_bytes']}-byte datagrams, "
              f"{p['udp_duration_s']} s per run; datagrams reaching the task's interface):"]
    for key, label in (("direct", "direct to the task"), ("vip", "through the VIP"),
                       ("routed", "(diag) routing-only ns")):
        row = udp.get(key, {})
        lines.append(f"  {label:<22}{_fmt(row.get('pps'), ',.0f'):>10} pkt/s (sent {_fmt(row.get('sent_pps'), ',.0f')}/s)"
                     f"  CPU {_fmt(row.get('cpu_us_per_packet'), '.2f')} us/pkt (kernel {_fmt(row.get('kernel_us_per_packet'), '.2f')})"
                     + (f"  x direct {row['x_direct_paired']:.2f} (x medians {row['x_direct']:.2f}; "
                        f"kernel CPU per packet: direct / this = {row['kernel_x_direct']:.2f})"
                        if key != "direct" and row.get("x_direct_paired") and row.get("kernel_x_direct") else "")
                     + f"  steal/other {_fmt(row.get('steal_percent'), '.0f')}/{_fmt(row.get('other_percent'), '.0f')} %")
    others = [r["other_percent_max"] for r in tcp.values()]
    steal = [r["steal_percent_max"] for r in tcp.values()]
    if (others and max(others) > 5) or (steal and max(steal) > 5):
        lines += ["", f"NOTE: in some runs other processes used up to {max(others):.0f} % and the hypervisor stole up "
                      f"to {max(steal):.0f} % of the machine's CPU (medians in column 'steal/other %'): absolute rates "
                      "move with that; the paired ratios are the numbers to compare."]
    lines += ["", "cost per connection (differences of the medians: connect p50, machine CPU per connection and its "
                  "kernel part, wrk p50):"]
    for name, c in results["hop_costs"].items():
        if isinstance(c, dict):
            lines.append(f"  {name:<28} connect {_fmt(c['connect_p50_us'], '+.0f')} us, CPU {_fmt(c['cpu_us_per_conn'], '+.1f')} us"
                         f" (kernel {_fmt(c['kernel_us_per_conn'], '+.1f')} us), p50 {_fmt(c['p50_ms'], '+.3f')} ms")
        elif c is not None:
            lines.append(f"  {name:<28} {c} ns")
    lines += ["", "client address kept (no SNAT), new connections: x the same path with SNAT, x direct (paired; "
                  "ratios of the medians in brackets):"]
    for key, k in results.get("source_kept", {}).items():
        lines.append(f"  {key:<16} x {k['snat_path']} {_fmt(k['x_snat_path_paired'], '.2f')} "
                     f"({_fmt(k['x_snat_path_medians'], '.2f')}), x direct {_fmt(k['x_direct_paired'], '.2f')} "
                     f"({_fmt(k['x_direct_medians'], '.2f')})")
    lines += ["", "goals:"]
    for name, g in results["goals"].items():
        state = "not evaluated" if g["met"] is None else ("met" if g["met"] else "NOT MET")
        lines.append(f"  {name:<22} {_fmt(g['value'], '.2f')} paired (ratio of medians {_fmt(g['ratio_of_medians'], '.2f')}) "
                     f"goal {g['goal']}: {state}{'  (' + g['note'] + ')' if g['note'] else ''}")
    return "\n".join(lines)


def versions() -> dict:
    def first(argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (done.stdout or done.stderr).splitlines()[0].strip()
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    with open("/proc/loadavg", encoding="ascii") as handle:
        load = " ".join(handle.read().split()[:3])
    return {"wrk": first(["wrk", "--version"]).split(" [")[0], "haproxy": first(["haproxy", "-v"]).split(" - ")[0],
            "iptables": first(["iptables-legacy", "--version"]), "loadavg_at_start": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s runs, 2 rounds, sizes 10, 100 and 1,000 (about 1 min)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk run (default 3; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over every path (default 5; --quick 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--connects", type=int, default=None, help="timed connects per path per round (default 500)")
    parser.add_argument("--udp-senders", type=int, default=4, help="parallel Python UDP sender processes")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args(argv)
    args.duration = args.duration or (1 if args.quick else 3)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.connects = args.connects or (200 if args.quick else 500)
    args.udp_duration = 1.5 if args.quick else 2.0
    if os.geteuid() != 0:
        parser.error("needs root (creates network namespaces and programs nftables in them)")
    if not (1 <= args.duration <= 60 and 1 <= args.rounds <= 50 and 1 <= args.connections <= 1000
            and 1 <= args.connects <= 10000 and 1 <= args.udp_senders <= 32):
        parser.error("--duration 1..60, --rounds 1..50, --connections 1..1000, --connects 1..10000, --udp-senders 1..32")
    for tool in ("wrk", "haproxy", "nft", "iptables-legacy-restore", "ip"):
        if not shutil.which(tool):
            parser.error(f"needs {tool}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below still runs
    started = time.perf_counter()
    results = {"machine": {**machine_info(), **versions()}, "failures": []}
    bed = d.BenchTestbed(prefix="imdp" + secrets.token_hex(2))
    procs, workdir = h.Processes(), tempfile.mkdtemp(prefix="imdp-")
    run = None
    try:
        print(f"building the testbed ({bed.prefix}-*) and loading the rulesets ...", flush=True)
        bed.up()
        run = Run(args, bed, procs, workdir)
        results["parameters"] = {"duration_s": args.duration, "rounds": args.rounds, "connections": args.connections,
                                 "connects": args.connects, "udp_senders": args.udp_senders,
                                 "udp_duration_s": args.udp_duration, "udp_payload_bytes": 18,
                                 "sizes": run.sizes, "endpoints_per_other_service": ENDPOINTS, "quick": args.quick,
                                 "task": f"t1 on node1: {d.TASK_APP} (app), {d.TASK_INGRESS} (ingress)"}
        results["variants"] = [{k: v[k] for k in ("key", "label", "client", "address", "port")} for v in run.variants]
        run.setup()
        results["loads"] = run.loads
        measured = run.measure()
        results["measured"] = measured
        results["summary"] = summarize(measured)
        results["goals"] = goals(results["summary"], measured, run.sizes, args.quick)
        results["hop_costs"] = hop_costs(results["summary"], run.sizes)
        results["source_kept"] = source_kept(results["summary"], measured)
    except Exception as err:  # noqa: BLE001 - reported and turned into exit status 1
        results["failures"].append(f"run aborted: {type(err).__name__}: {err}")
        print(f"run aborted: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        procs.stop_all()
        if run and run.sink:
            run.sink.close()
        cleanup(bed)
        shutil.rmtree(workdir, ignore_errors=True)
    if run:
        results["failures"] += run.failures
    results["wall_s"] = _s(started)
    if "summary" in results:
        print()
        print(table(results))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"\n{len(results['failures'])} failed measurements; {results['wall_s']:.0f} s; results written to {args.out}")
    for failure in results["failures"][:20]:
        print("  failed: " + failure)
    return 1 if results["failures"] else 0


def cleanup(bed: d.BenchTestbed) -> None:
    """Empty every ruleset first (a namespace holding 100k chains is otherwise torn down by a
    kernel worker in the background), then delete every namespace the testbed made."""
    for ns in list(bed.namespaces):
        try:
            bed.run(ns, ["nft", "flush", "ruleset"], timeout=300, check=False)
            if "-lin" in ns:
                bed.run(ns, ["iptables-legacy", "-t", "nat", "-F"], timeout=120, check=False)
                bed.run(ns, ["iptables-legacy", "-t", "nat", "-X"], timeout=120, check=False)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    bed.down()


if __name__ == "__main__":
    sys.exit(main())
