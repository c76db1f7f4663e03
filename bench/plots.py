"""Plots of the benchmark results: bench/results/*.json -> docs/img/bench/*.svg (+ measured.txt).

`make plots` (and the end of `make bench`) runs it. It only draws what the JSON files hold; a
missing file skips its plots and says so. SVG is text (diffable) and written deterministically
(no date, fixed ids), so an unchanged result gives an unchanged picture. `measured.txt` is the
table of machines and dates the Benchmarks page includes: the date comes from the JSON when the
benchmark recorded one, else from the last commit of the result file (the table says which).

    .venv/bin/python bench/plots.py [--results bench/results] [--out docs/img/bench]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STYLE = {"svg.hashsalt": "ingressmesh", "svg.fonttype": "none", "font.size": 9,
         "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100}


def _load(results: str, name: str):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        print(f"plots: {path} missing; its plots are skipped", file=sys.stderr)
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _save(fig, out: str, name: str) -> str:
    path = os.path.join(out, name)
    fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    print(f"plots: wrote {os.path.relpath(path, ROOT)}")
    return path


def packet_path(d, out: str) -> None:
    """Connection rate relative to a direct connection: per path at 10 services, and vs services."""
    tcp = d["summary"]["tcp"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = [k for k in ("direct", "fast", "vip", "routed", "published", "published_kept", "mesh", "mesh_kept")
            if k in tcp]
    names = {"direct": "direct to the task", "fast": "VIP, fast path", "vip": "VIP via the LB namespace",
             "routed": "one more ns, routing only", "published": "published port, task's node",
             "published_kept": "the same, client address kept", "mesh": "published port, other node (mesh)",
             "mesh_kept": "the same, client address kept"}
    values = [tcp[k]["x_direct_paired"] for k in keys]
    low = [v - (tcp[k]["x_direct_paired_range"] or [v, v])[0] for k, v in zip(keys, values)]
    high = [(tcp[k]["x_direct_paired_range"] or [v, v])[1] - v for k, v in zip(keys, values)]
    ys = list(range(len(keys)))[::-1]
    left.barh(ys, values, xerr=[low, high], capsize=3, color="#4a78a8")
    for y, v in zip(ys, values):
        left.text(0.02, y, f"{v:.2f}x", va="center", color="white", fontweight="bold")
    left.set_yticks(ys, [names[k] for k in keys], fontsize=8)
    left.set_xlabel("new connections/s, x direct (paired median, range of rounds)")
    left.set_title("Packet path, new TCP connection per request (10 services)")
    left.set_xlim(0, 1.1)
    series = [("ingressmesh VIP (nftables maps)", [("vip", 10), ("im1000", 1000), ("im10000", 10000)], "o-"),
              ("kube-proxy-style nft chains", [("kp10000", 10000)], "s"),
              ("iptables, one rule per service", [("lin10", 10), ("lin10000", 10000)], "^--")]
    for label, points, fmt in series:
        xs = [n for k, n in points if k in tcp]
        ys = [tcp[k]["x_direct_paired"] for k, n in points if k in tcp]
        if xs:
            right.plot(xs, ys, fmt, label=label)
    right.axhline(1.0, color="grey", linewidth=1, linestyle=":", label="direct = 1.0")
    right.set_xscale("log")
    right.set_xlabel("other services loaded (10 endpoints each)")
    right.set_ylabel("x direct")
    right.set_ylim(0, 1.1)
    right.set_title("VIP path vs number of services")
    right.legend(fontsize=7, loc="lower left")
    _save(fig, out, "packet_path.svg")


def control_plane(d, out: str) -> None:
    """Cold load and one endpoint change vs services: ingressmesh against kube-proxy-style chains."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for variant, label, marker, color in (("ingressmesh", "ingressmesh", "o", "#1f77b4"),
                                          ("kube_proxy_style", "kube-proxy-style", "s", "#ff7f0e")):
        sizes = sorted(d.get(variant, {}), key=int)
        xs = [int(s) for s in sizes]
        left.plot(xs, [d[variant][s]["cold"]["total_ms"] / 1000 for s in sizes], marker=marker, color=color,
                  label=label)
        right.plot(xs, [d[variant][s]["add_endpoint"]["median_ms"] for s in sizes], marker=marker, color=color,
                   label=f"{label}: add")
        right.plot(xs, [d[variant][s]["remove_endpoint"]["median_ms"] for s in sizes], marker=marker,
                   color=color, linestyle="--", alpha=0.6, label=f"{label}: remove")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("services (x10 endpoints)")
        ax.legend(fontsize=7)
    left.set_ylabel("seconds")
    left.set_title("Cold sync of one LB namespace")
    right.set_ylabel("ms (median)")
    right.set_title("One endpoint change, nft and conntrack included")
    _save(fig, out, "control_plane.svg")


def live_pipeline(d, out: str) -> None:
    """One health change from a node's report to the agent's new plan, deltas vs whole snapshots."""
    rows = d["results"]
    xs = [r["services"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(xs, [r["live"]["delta"]["p50_ms"] for r in rows], "o-", label="deltas (p50)")
    ax.plot(xs, [r["live"]["delta"]["max_ms"] for r in rows], "o:", alpha=0.6, label="deltas (max)")
    ax.plot(xs, [r["live"]["whole"]["p50_ms"] for r in rows], "s--", label="whole snapshots (p50)")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1, label="goal 50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services (x10 tasks, 30 nodes)")
    ax.set_ylabel("ms")
    ax.set_title("One change, controller -> agent (two processes over HTTP)")
    ax.legend(fontsize=7)
    _save(fig, out, "live_pipeline.svg")


def l7_throughput(l7, tls, out: str) -> None:
    """Requests/s: hand-written minimal HAProxy config against the config ingressmesh renders."""
    groups, hand, ours = [], [], []
    if l7:
        for mode in ("keep-alive", "close"):
            m = l7["throughput"]["modes"].get(mode)
            if m:
                groups.append({"keep-alive": "HTTP keep-alive", "close": "HTTP, new\nconnection"}.get(mode, f"HTTP {mode}"))
                hand.append(m["b"]["rps"])
                ours.append(m["c"]["rps"])
    if tls:
        for mode, m in tls["throughput"]["modes"].items():
            groups.append({"keep-alive": "HTTPS keep-alive", "resumed": "HTTPS, new conn.\nresumed session",
                           "full": "HTTPS, new conn.\nfull handshake"}.get(mode, f"HTTPS {mode}"))
            hand.append(m["b"]["rps_median"])
            ours.append(m["c"]["rps_median"])
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], hand, 0.4, label="hand-written HAProxy config", color="#999999")
    ax.bar([x + 0.2 for x in xs], ours, 0.4, label="ingressmesh proxy's config", color="#4a78a8")
    for x, h, o in zip(xs, hand, ours):
        ax.text(x + 0.2, o, f"{o / h:.2f}x", ha="center", va="bottom")
    ax.set_xticks(list(xs), groups, fontsize=8)
    ax.set_ylabel("requests/s (wrk, 1 thread)")
    ax.set_title("L7 throughput on loopback, HAProxy 2.6")
    ax.legend(fontsize=7)
    _save(fig, out, "l7_throughput.svg")


def route_changes(l7, out: str) -> None:
    """Time until every request for a changed route is served by the new state."""
    rc = l7["route_changes"]
    cases = [("new_task", "new task\n(runtime API)"), ("host_alias", "host added to\na backend (map)"),
             ("new_host", "new host\n(reload)")]
    data = [(label, rc[key]["samples_ms"]) for key, label in cases if key in rc]
    scale = rc.get("at_scale", {})
    if "new_host" in scale:
        data.append((f"new host with\n{scale['routes']} routes", scale["new_host"]["samples_ms"]))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.boxplot([d for _, d in data], whis=(0, 100))
    ax.set_xticks(range(1, len(data) + 1), [label for label, _ in data], fontsize=8)
    for i, (_, samples) in enumerate(data, start=1):
        ax.scatter([i] * len(samples), samples, s=6, alpha=0.5, color="#4a78a8")
    ax.set_ylabel("ms from the snapshot to serving it")
    ax.set_title("L7 route-change latency (one proxy process)")
    _save(fig, out, "route_changes.svg")


def ipvs(d, out: str) -> None:
    """VIP/direct with each backend in Debian's kernel under QEMU."""
    s = d["summary"]
    names = [b for b in ("nftables", "ipvs") if b in s]
    fig, ax = plt.subplots(figsize=(4, 3.2))
    values = [s[b]["vip_vs_direct"] for b in names]
    ax.bar(names, values, color=["#4a78a8", "#a8784a"][:len(names)])
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}x", ha="center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("VIP connections/s, x direct")
    ax.set_title("nftables vs IPVS (QEMU, emulated)")
    _save(fig, out, "ipvs.svg")


def _git_date(path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%cI", "--", path],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out[:16].replace("T", " ") if out else "not committed yet"


def measured(results: str, out: str) -> None:
    """measured.txt: per result file, the machine and the date, and where the date comes from."""
    lines = ["| result file | machine | measured | date from |", "| --- | --- | --- | --- |"]
    for name in sorted(os.listdir(results)):
        if not name.endswith(".json"):
            continue
        d = _load(results, name) or {}
        m = d.get("machine") or {}
        cores = m.get("nproc") or m.get("cores") or d.get("machine_cpus")
        machine = ", ".join(str(x) for x in (
            f"{cores} cores" if cores else None, m.get("cpu"), m.get("kernel"),
            f"{m['mem_total_mb'] // 1024} GiB" if m.get("mem_total_mb") else None) if x) or "not recorded"
        if m.get("date"):
            date, source = m["date"][:16].replace("T", " "), "the JSON (`machine.date`)"
        else:
            date, source = _git_date(os.path.join(results, name)), "git log of the file (last commit)"
        when = f"{date} UTC" if date[:1].isdigit() else date
        lines.append(f"| `bench/results/{name}` | {machine} | {when} | {source} |")
    path = os.path.join(out, "measured.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"plots: wrote {os.path.relpath(path, ROOT)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "bench"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    plt.rcParams.update(STYLE)
    load = lambda name: _load(args.results, name)  # noqa: E731
    if (d := load("data_path.json")):
        packet_path(d, args.out)
    if (d := load("control_plane.json")):
        control_plane(d, args.out)
    if (d := load("live_pipeline.json")):
        live_pipeline(d, args.out)
    l7, tls = load("l7.json"), load("l7_tls.json")
    l7_throughput(l7, tls, args.out)
    if l7:
        route_changes(l7, args.out)
    if (d := load("data_path_ipvs.json")):
        ipvs(d, args.out)
    measured(args.results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
