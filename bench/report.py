"""Turn the workers' JSON into the printed comparison table and the target verdicts.

Kept apart from control_plane.py so the numbers (JSON) and their presentation (text) can be
read and changed independently; everything here is a pure function of the results dict.
"""
from __future__ import annotations

from typing import Optional

TARGET_SERVICES = 10_000
COLD_TARGET_S = 5.0
CHANGE_TARGET_MS = 50.0
MEMORY_TARGET_MB = 200.0


def _cold_ms(run: Optional[dict]) -> Optional[float]:
    if not run or run.get("cold", {}).get("status") == "timeout":
        return None
    return run.get("cold", {}).get("total_ms")


def fmt_ms(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def _kp_cold(run: Optional[dict]) -> str:
    if not run:
        return "-"
    cold = run.get("cold", {})
    if cold.get("status") == "timeout":
        return f"> {cold.get('timeout_s', 0):.0f} s (timeout)"
    return f"{fmt_ms(cold.get('total_ms'))} (nft {fmt_ms(cold.get('nft_ms'))})"


def _ratio(kp: Optional[float], im: Optional[float], kp_timed_out: bool = False) -> str:
    if kp_timed_out and im:
        return "> timeout"
    if not kp or not im:
        return "-"
    return f"{kp / im:.1f}x"


def _change(run: Optional[dict], kind: str) -> Optional[dict]:
    return (run or {}).get(kind)


def _change_cell(stats: Optional[dict]) -> str:
    if not stats:
        return "-"
    return f"{stats['median_ms']:.1f} / {stats['max_ms']:.1f}"


def table(results: dict) -> str:
    """The human-readable comparison: cold syncs, one-change latencies, memory, targets."""
    im_runs, kp_runs = results["ingressmesh"], results["kube_proxy_style"]
    endpoints = results["parameters"]["endpoints"]
    lines = [f"Cold full sync, E={endpoints} endpoints per service (plan + render + nft transaction)",
             f"{'services':>9}  {'ingressmesh total (nft)':<26}{'kube-proxy-style total (nft)':<34}ratio kp/im"]
    for size in results["parameters"]["sizes"]:
        im, kp = im_runs.get(str(size)), kp_runs.get(str(size))
        im_cell = f"{fmt_ms(_cold_ms(im))} (nft {fmt_ms((im or {}).get('cold', {}).get('nft_ms'))})"
        timed_out = bool(kp) and kp.get("cold", {}).get("status") == "timeout"
        lines.append(f"{size:>9,}  {im_cell:<26}{_kp_cold(kp):<34}{_ratio(_cold_ms(kp), _cold_ms(im), timed_out)}")
    lines += ["", "One change (median / max ms). ingressmesh (agent path): incremental re-plan of the changed",
              "service + entry diff + nft (+ conntrack -D on removal), and its nft(+conntrack) median alone;",
              "kube-proxy-style: change render + nft only",
              f"{'services':>9}  {'change':<13}{'ingressmesh':<17}{'im nft only':<13}{'kube-proxy-style':<18}ratio kp/im"]
    for size in results["parameters"]["sizes"]:
        im, kp = im_runs.get(str(size)), kp_runs.get(str(size))
        for kind, label in (("add_endpoint", "+1 endpoint"), ("remove_endpoint", "-1 endpoint")):
            a, b = _change(im, kind), _change(kp, kind)
            nft_only = (a or {}).get("nft_median_ms", (a or {}).get("nft_and_conntrack_median_ms"))
            ratio = _ratio(b and b["median_ms"], a and a["median_ms"])
            lines.append(f"{size:>9,}  {label:<13}{_change_cell(a):<17}{fmt_ms(nft_only):<13}"
                         f"{_change_cell(b):<18}{ratio}")
    lines += ["", "One change through the stateless path (whole cluster re-planned, as `ingressmesh apply` does)",
              f"{'services':>9}  {'change':<13}{'ingressmesh median / max ms'}"]
    for size in results["parameters"]["sizes"]:
        im = im_runs.get(str(size))
        for kind, label in (("add_endpoint_full_replan", "+1 endpoint"), ("remove_endpoint_full_replan", "-1 endpoint")):
            lines.append(f"{size:>9,}  {label:<13}{_change_cell(_change(im, kind))}")
    lines += ["", "Peak RSS (MiB): Python process (RUSAGE_SELF; ingressmesh: agent path, then with the",
              "stateless-path runs) / nft of the cold load (GNU time %M)",
              f"{'services':>9}  {'ingressmesh':<26}{'kube-proxy-style':<26}"]
    for size in results["parameters"]["sizes"]:
        cells = []
        for run in (im_runs.get(str(size)), kp_runs.get(str(size))):
            rss = (run or {}).get("rss_mb", {})
            peak = f"{rss['peak_agent']} ({rss.get('peak')})" if "peak_agent" in rss else rss.get("peak", "-")
            child = (run or {}).get("nft_peak_rss_mb_cold")
            cells.append(f"{peak} / {child if child is not None else '-'}")
        lines.append(f"{size:>9,}  {cells[0]:<26}{cells[1]:<26}")
    lines += ["", f"Targets (ingressmesh at {TARGET_SERVICES:,} services x {endpoints})"]
    for target in targets(results):
        lines.append(f"  {target['target']:<34}{target['measured']:<28}{target['verdict']}")
    return "\n".join(lines)


def targets(results: dict) -> list[dict]:
    """Each target with the measured value and 'met' / 'not met' / 'not measured'."""
    run = results["ingressmesh"].get(str(TARGET_SERVICES))
    out = []
    cold = _cold_ms(run)
    out.append(_verdict(f"{TARGET_SERVICES // 1000}k x {results['parameters']['endpoints']} cold < {COLD_TARGET_S:g} s",
                        cold, cold is not None and cold < COLD_TARGET_S * 1000, fmt_ms(cold)))
    changes = [c for c in (_change(run, "add_endpoint"), _change(run, "remove_endpoint")) if c]
    worst_median = max((c["median_ms"] for c in changes), default=None)
    worst_max = max((c["max_ms"] for c in changes), default=None)
    out.append(_verdict(f"one change < {CHANGE_TARGET_MS:g} ms (median)", worst_median,
                        worst_median is not None and worst_median < CHANGE_TARGET_MS,
                        f"{fmt_ms(worst_median)} (max {fmt_ms(worst_max)})"))
    # The agent path's peak (before the stateless-path runs, which hold a second whole plan).
    # MiB; the target is read in (stricter) MB.
    rss = (run or {}).get("rss_mb", {})
    peak = rss.get("peak_agent", rss.get("peak"))
    peak_mb = round(peak * 1.048576, 1) if peak is not None else None
    out.append(_verdict(f"agent memory < {MEMORY_TARGET_MB:g} MB (peak RSS)", peak_mb,
                        peak_mb is not None and peak_mb < MEMORY_TARGET_MB,
                        f"{peak_mb} MB ({peak} MiB)" if peak else "-"))
    return out


def _verdict(name: str, value, met: bool, shown: str) -> dict:
    verdict = "not measured" if value is None else ("met" if met else "NOT MET")
    return {"target": name, "value": value, "measured": shown, "verdict": verdict}
