"""Control-plane benchmark: ingressmesh's nftables sync vs a kube-proxy-style ruleset.

    .venv/bin/python bench/control_plane.py [--sizes 1000,10000] [--endpoints 10]
                                            [--changes 20] [--out bench/results/control_plane.json]

Why: DESIGN §9 sets numbers to beat (kube-proxy: ~9 min cold at 10k services, ~141 ms per
change) and targets (10k x 10 cold < 5 s, one change < 50 ms, agent < 200 MB).  Those are only
worth quoting if measured side by side on the same machine, in real namespaces, with the
agent's real code path (plan_node -> NftBackend -> KernelNft -> `nft -f -`).  Each size and
each variant runs in a fresh worker process (workers.py) so peak RSS is per size, in a fresh
scratch namespace this script creates and always deletes.  It never touches the root
namespace's nftables.  Needs root.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

import report
from scratch import ScratchNamespaces

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "control_plane.json")


def machine_info() -> dict:
    """What the numbers were measured on, so they can be quoted with their context."""
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    cpu = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        for line in handle.read().splitlines()[:200]:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="ascii") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_total_mb": mem_kb // 1024,
            "kernel": platform.release(), "nft_version": nft.stdout.strip(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _worker(variant: str, size: int, netns_path: str, args) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON (or the failure)."""
    argv = [sys.executable, os.path.join(HERE, "workers.py"), variant, "--services", str(size),
            "--endpoints", str(args.endpoints), "--netns-path", netns_path,
            "--changes", str(args.changes), "--timeout", str(args.kp_timeout)]
    if args.profile and variant == "ingressmesh" and size == max(args.sizes):
        argv.append("--profile")
    # Backstop only: the worker caps its own nft load at --kp-timeout.
    budget = 2 * args.kp_timeout + 900
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own group, by its id
        proc.communicate()
        return {"error": f"worker exceeded {budget:.0f} s"}
    except BaseException:  # Ctrl-C / SIGTERM: do not leave the worker running on its own
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        return {"error": stderr.strip()[-2000:] or f"worker exited {proc.returncode}"}
    result = json.loads(stdout)
    result["worker_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def _measure(variant: str, size: int, scratch: ScratchNamespaces, args) -> dict:
    name = scratch.create()
    try:
        print(f"  {variant:<12} {size:>7,} services ... ", end="", flush=True)
        result = _worker(variant, size, scratch.path(name), args)
        print(result.get("error", "").splitlines()[-1] if "error" in result
              else f"done in {result['worker_wall_s']} s", flush=True)
    finally:
        flush_s = scratch.delete(name)
    result["teardown_flush_s"] = round(flush_s, 2) if flush_s is not None else None
    return result


def run(args) -> dict:
    results = {"machine": machine_info(),
               "parameters": {"sizes": args.sizes, "endpoints": args.endpoints, "changes": args.changes,
                              "kp_timeout_s": args.kp_timeout, "network": "one overlay, VIP per service",
                              "planned_node": "node-0 of 3", "namespace_plan": "lb"},
               "ingressmesh": {}, "kube_proxy_style": {}}
    with ScratchNamespaces() as scratch:
        for size in args.sizes:
            results["ingressmesh"][str(size)] = _measure("ingressmesh", size, scratch, args)
            if not args.skip_kube_proxy:
                results["kube_proxy_style"][str(size)] = _measure("kubeproxy", size, scratch, args)
    results["targets"] = report.targets(results)
    return results


def _print_profile(results: dict) -> None:
    for size, run_result in results["ingressmesh"].items():
        for key in ("profile_full_sync", "profile_one_change"):
            prof = run_result.get(key)
            if prof:
                print(f"\ncProfile, {key.replace('profile_', '')} at {int(size):,} services "
                      f"(wall {report.fmt_ms(prof['wall_ms'])} under the profiler); own time per file:")
                for name, ms in prof["own_ms_by_file"].items():
                    print(f"  {ms:>9.1f} ms  {name}")


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=[1000, 10000], help="service counts, e.g. 1000,10000")
    parser.add_argument("--endpoints", type=int, default=10, help="tasks (endpoints) per service")
    parser.add_argument("--changes", type=int, default=20, help="add/remove-one-endpoint repetitions per size")
    parser.add_argument("--kp-timeout", type=float, default=600.0, help="cap on one kube-proxy-style nft load (s)")
    parser.add_argument("--skip-kube-proxy", action="store_true", help="measure ingressmesh only")
    parser.add_argument("--profile", action="store_true", help="cProfile a full sync and a change at the largest size")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (creates network namespaces and runs nft in them)")
    if not args.sizes or min(args.sizes) < 1 or args.endpoints < 1 or args.changes < 0:
        parser.error("sizes and endpoints must be positive, changes >= 0")
    # SIGTERM becomes SystemExit so the `finally` that deletes the namespaces still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"ingressmesh control-plane benchmark: sizes {args.sizes}, {args.endpoints} endpoints each")
    results = run(args)
    print()
    print(report.table(results))
    if args.profile:
        _print_profile(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    print(f"\nresults written to {args.out}")
    failed = [f"{v} {s}" for v in ("ingressmesh", "kube_proxy_style") for s, r in results[v].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
