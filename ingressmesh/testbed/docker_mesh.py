"""Reading Docker's own IPVS mesh next to ours, in any namespace: who counted which connection,
and Docker's rules and services without their counters (what ingressmesh must never change).

IPVS counts every connection a fwmark service takes (`ipvsadm --stats`).  Docker's marks count
up from 256; ingressmesh's live in 0x4d45xxxx (ipvs/desired.py), so one listing says how many
new connections each mesh took in a namespace."""
from __future__ import annotations

from ..ipvs.desired import MARK_BASE, MARK_MASK
from ..netns import Netns


# The kernel folds IPVS's per-CPU counters into what `--stats` shows every 2 s (the estimator):
# wait this long after the last connection before reading a count that must be exact.
STATS_SETTLE_SECONDS = 2.5


def is_ours(mark: int) -> bool:
    return mark & MARK_MASK == MARK_BASE


def fwmark_connections(ns: Netns) -> dict[int, int]:
    """Connections taken so far by every fwmark IPVS service of a namespace: {mark: conns}."""
    listing = ns.run(["ipvsadm", "-Ln", "--stats", "--exact"]).stdout
    found = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "FWM":
            found[int(fields[1], 0)] = int(fields[2])
    return found


def connections_by_mesh(ns: Netns) -> dict[str, int]:
    """{"docker": conns, "ingressmesh": conns} counted by the IPVS services of a namespace."""
    counts = fwmark_connections(ns)
    return {"docker": sum(c for m, c in counts.items() if not is_ours(m)),
            "ingressmesh": sum(c for m, c in counts.items() if is_ours(m))}


def fwmark_services(ns: Netns) -> dict[int, dict[str, str]]:
    """Every fwmark IPVS service of a namespace: {mark: {real server address: weight}}."""
    services: dict[int, dict[str, str]] = {}
    current = None
    for line in ns.run(["ipvsadm", "-Ln"]).stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("TCP", "UDP", "SCTP"):
            current = None
        elif fields and fields[0] == "FWM":
            current = services.setdefault(int(fields[1], 0), {})
        elif current is not None and len(fields) >= 4 and fields[0] == "->" and fields[1][0].isdigit():
            current[fields[1].rsplit(":", 1)[0]] = fields[3]
    return services


def our_ipvs_dests(ns: Netns) -> dict[int, list[str]]:
    """ingressmesh's fwmark services and their real servers taking new connections (weight > 0)."""
    return {mark: sorted(a for a, weight in dests.items() if weight != "0")
            for mark, dests in fwmark_services(ns).items() if is_ours(mark)}


def docker_state(ns: Netns) -> dict[str, object]:
    """Docker's iptables rules and IPVS services in a namespace, counters and ingressmesh's own
    objects (its INGRESSMESH-* chains, its fwmark services) left out."""
    rules = []
    for line in ns.run(["iptables-save"]).stdout.splitlines():
        if line.startswith("#") or "INGRESSMESH" in line:
            continue
        rules.append(line.split(" [", 1)[0] if line.startswith(":") else line)  # ":CHAIN POLICY [p:b]"
    services = {mark: dests for mark, dests in fwmark_services(ns).items() if not is_ours(mark)}
    return {"iptables": rules, "ipvs": services}
