"""The VIP path with the nftables backend and with the IPVS backend, in one kernel, one run.

This machine's kernel has no IPVS, so `make bench` runs this inside Debian's stock kernel under
QEMU (scripts/kernel-lab, software emulation): absolute numbers there mean little, the ratios
within the run do.  On the conformance testbed (bench/data_path_helpers.py) the service's one
task t1 runs HAProxy; node1's LB namespace is programmed by ingressmesh with one backend, then
the other (each backend's cleanup first), alternating every round.  Measured each time, as in
bench/data_path.py: new TCP connections per second (wrk, one request per connection) and
connect times, direct to the task and through the VIP.

    scripts/kernel-lab --share DIR -- .venv/bin/python bench/data_path_ipvs.py --out DIR/data_path_ipvs.json
    (make bench does this and copies the result to bench/results/data_path_ipvs.json)
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import data_path_helpers as d  # noqa: E402  (bench/ is not a package)
import l7_helpers as h  # noqa: E402
from control_plane import machine_info  # noqa: E402
from ingressmesh.dataplane import backends  # noqa: E402
from ingressmesh.dataplane.apply import NodeApplier  # noqa: E402
from ingressmesh.dataplane.layout import Layout  # noqa: E402
from ingressmesh.netns import Netns  # noqa: E402
from ingressmesh.plan import PlanOptions, plan_node  # noqa: E402
from ingressmesh.testbed.topology import TCP_PORT  # noqa: E402

VIP = "10.0.1.2"
OTHERS, ENDPOINTS = 10, 10
BACKENDS = ("nftables", "ipvs")


def program(bed: d.BenchTestbed, backend: str) -> None:
    """Both nodes programmed by `backend` alone: the other one's state is cleaned up first."""
    namespaces = [ns for i in (1, 2) for ns in (bed.node_ns(i), bed.ingress_ns(i), bed.lb_ns(i))]
    for ns in namespaces:
        for name in BACKENDS:
            backends.factory(name)(Netns.from_ref(ns)).cleanup()
    cluster = d.cluster(bed, VIP, OTHERS, ENDPOINTS)
    for i in (1, 2):
        applier = NodeApplier(Layout(host=bed.node_ns(i), ingress=bed.ingress_ns(i), lb=bed.lb_ns(i)),
                              backends.factory(backend))
        report = applier.apply(plan_node(cluster, f"node{i}", PlanOptions(now=time.time())))
        if not report.ok:
            raise RuntimeError(f"{backend} on node{i}: {report.errors}")


def sample(bed: d.BenchTestbed, address: str, args) -> dict:
    found = d.run_wrk(bed, bed.client_ns(1), d.wrk_argv(address, TCP_PORT, args.connections, args.duration),
                      args.duration)
    found["connect"] = d.connect_times(bed, bed.client_ns(1), address, TCP_PORT, args.connects)
    return found


def summarize(samples: dict) -> dict:
    """Per backend: median conn/s direct and via the VIP, their ratio (each VIP run against the
    direct run just before it), connect p50; and IPVS against nftables."""
    out = {}
    for backend in BACKENDS:
        runs = samples[backend]
        ratios = [r["vip"]["rps"] / r["direct"]["rps"] for r in runs if r["direct"]["rps"]]
        out[backend] = {"direct_rps": statistics.median(r["direct"]["rps"] for r in runs),
                        "vip_rps": statistics.median(r["vip"]["rps"] for r in runs),
                        "vip_vs_direct": round(statistics.median(ratios), 3),
                        "vip_connect_p50_us": statistics.median(r["vip"]["connect"]["p50_us"] for r in runs),
                        "direct_connect_p50_us": statistics.median(r["direct"]["connect"]["p50_us"] for r in runs)}
    out["ipvs_vs_nftables"] = round(out["ipvs"]["vip_vs_direct"] / out["nftables"]["vip_vs_direct"], 3)
    return out


def table(summary: dict, machine: dict) -> str:
    lines = [f"VIP path, nftables vs IPVS backend, one kernel run ({machine.get('kernel')}, "
             f"{machine.get('nproc')} CPUs{', QEMU' if os.environ.get('KERNEL_LAB') else ''})",
             f"{'backend':<10} {'direct conn/s':>14} {'VIP conn/s':>11} {'VIP/direct':>11} {'VIP connect p50':>16}"]
    for backend in BACKENDS:
        s = summary[backend]
        lines.append(f"{backend:<10} {s['direct_rps']:>14,.0f} {s['vip_rps']:>11,.0f} {s['vip_vs_direct']:>10.2f}x "
                     f"{s['vip_connect_p50_us']:>13.0f} us")
    lines.append(f"IPVS VIP/direct against nftables VIP/direct: {summary['ipvs_vs_nftables']:.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each measuring both backends")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--connects", type=int, default=200)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not (1 <= args.duration <= 30 and 1 <= args.rounds <= 20 and 1 <= args.connections <= 256
            and 1 <= args.connects <= 5000):
        parser.error("--duration 1..30, --rounds 1..20, --connections 1..256, --connects 1..5000")
    ok, why = backends.ipvs_available()
    if not ok:
        parser.error(f"needs a kernel with IPVS ({why}): run it under scripts/kernel-lab")
    results = {"machine": machine_info(), "parameters": vars(args), "failures": []}
    bed = d.BenchTestbed(prefix="imdv" + secrets.token_hex(2))
    procs, workdir = h.Processes(), tempfile.mkdtemp(prefix="imdv-")
    samples = {name: [] for name in BACKENDS}
    try:
        bed.up()
        d.start_haproxy(bed, procs, shutil.which("haproxy") or "/usr/sbin/haproxy", workdir, bed.task_ns(d.TASK.name))
        for number in range(1, args.rounds + 1):
            for backend in BACKENDS if number % 2 else BACKENDS[::-1]:
                program(bed, backend)
                status, body = d.http_get(bed, bed.client_ns(1), VIP, TCP_PORT)
                if status != 200 or body != d.TASK_APP:
                    raise RuntimeError(f"{backend}: the VIP answered {status} {body!r}, expected t1")
                run = {"direct": sample(bed, d.TASK_APP, args), "vip": sample(bed, VIP, args)}
                samples[backend].append(run)
                print(f"  round {number} {backend:<9} direct {run['direct']['rps']:>8,.0f} conn/s  "
                      f"VIP {run['vip']['rps']:>8,.0f} conn/s", flush=True)
        results["samples"] = samples
        results["summary"] = summarize(samples)
        print(table(results["summary"], results["machine"]))
    except Exception as err:  # noqa: BLE001 - reported and turned into exit status 1
        results["failures"].append(f"{type(err).__name__}: {err}")
        print(f"run aborted: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        procs.stop_all()
        for ns in list(bed.namespaces):
            bed.run(ns, ["nft", "flush", "ruleset"], timeout=60, check=False)
        bed.down()
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
