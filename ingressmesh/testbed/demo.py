"""`make demo`: the conformance topology, programmed by the ingressmesh CLI, with real traffic.

Brings up 2 nodes in namespaces, runs `ingressmesh apply` for each node from
examples/demo-cluster.json, prints `ingressmesh show`, then sends traffic through the web VIP
and through the published ports of every node.  `--keep` leaves the lab up to explore
(`ip netns list | grep imdemo`); running the demo again first removes a kept lab.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from . import traffic
from .cluster import WEB_TCP, WEB_UDP, WEB_VIP, EMPTY_VIP
from .topology import TCP_PORT, UDP_PORT, Testbed

PREFIX = "imdemo"
CLUSTER = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "demo-cluster.json")


def remove_previous_lab(prefix: str = PREFIX) -> None:
    """Remove a lab an earlier `--keep` run left: its processes by PID, then its namespaces."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.startswith(prefix + "-")]
    for name in names:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _cli(*argv: str) -> None:
    print(f"\n$ ingressmesh {' '.join(argv)}", flush=True)
    subprocess.run([sys.executable, "-m", "ingressmesh", *argv], check=True, timeout=120)


def _show_counts(title: str, counts) -> None:
    total = sum(counts.values())
    spread = ", ".join(f"{task} {n * 100 // total}%" for task, n in sorted(counts.items()))
    print(f"  {title:<48} {total} flows -> {spread}", flush=True)


def run(keep: bool, backend: str = "auto") -> None:
    cluster = os.path.abspath(CLUSTER)
    remove_previous_lab()
    bed = Testbed(prefix=PREFIX).up()
    try:
        print(f"testbed up: nodes {PREFIX}-n1/-n2 (ingress -n1i/-n2i, lb -n1lb/-n2lb), "
              f"tasks t1 (node1) t2 t3 (node2) t4 (node1, still starting), clients -c1/-c2, -ext")
        for i in (1, 2):
            _cli("apply", "--cluster", cluster, "--node", f"node{i}", "--host-netns", bed.node_ns(i),
                 "--ingress-netns", bed.ingress_ns(i), "--lb-netns", bed.lb_ns(i), "--backend", backend)
        for ns in (bed.lb_ns(1), bed.ingress_ns(1), bed.node_ns(1)):
            _cli("show", "--netns", ns, "--backend", backend)
        print("\ntraffic (real connections from client namespaces):")
        _show_counts(f"TCP  client1 -> VIP {WEB_VIP}:{TCP_PORT}", traffic.tcp_spread(bed.client_ns(1), WEB_VIP, TCP_PORT, 60))
        _show_counts(f"UDP  client2 -> VIP {WEB_VIP}:{UDP_PORT}", traffic.udp_spread(bed.client_ns(2), WEB_VIP, UDP_PORT, 30))
        for i in (1, 2):
            address = bed.node_address(i)
            _show_counts(f"TCP  outside -> node{i} {address}:{WEB_TCP}", traffic.tcp_spread(bed.ext_ns, address, WEB_TCP, 60))
            _show_counts(f"UDP  outside -> node{i} {address}:{WEB_UDP}", traffic.udp_spread(bed.ext_ns, address, WEB_UDP, 30))
        outcome, seconds = traffic.refusal_seconds(bed.client_ns(1), EMPTY_VIP, TCP_PORT)
        print(f"  TCP  client1 -> VIP {EMPTY_VIP} (service with no task)  {outcome} in {seconds * 1000:.1f} ms")
        if keep:
            print(f"\nlab kept: try `ip netns exec {bed.ext_ns} nc -v {bed.node_address(1)} {WEB_TCP}`; "
                  f"remove it with `make demo-down`")
    finally:
        if not keep:
            bed.down()
            print("\ntestbed removed")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument("--down", action="store_true", help="only remove a kept lab")
    parser.add_argument("--backend", default="auto", choices=("auto", "nftables", "ipvs"),
                        help="data plane for `ingressmesh apply` (auto: IPVS where the kernel has it)")
    args = parser.parse_args(argv)
    if args.down:
        remove_previous_lab()
        return
    run(args.keep, args.backend)


if __name__ == "__main__":
    main()
