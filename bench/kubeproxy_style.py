"""The baseline: the same VIP services rendered the way kube-proxy's nftables proxier does it.

Why it exists: DESIGN §4/§9 claim ingressmesh beats kube-proxy because it keeps per-service
state in map elements, while kube-proxy writes one chain per service and one per endpoint.
To measure that claim side by side on this machine, this module renders the chain-per-service /
chain-per-endpoint shape (dispatch `ip daddr . meta l4proto . th dport vmap @services`, service
chains `numgen random mod N vmap { i : goto ep_x }`, endpoint chains `dnat ip to <addr>`) in
knftables' one-command-per-line style.  It is deliberately lean: real kube-proxy adds masquerade
marking, firewall and no-endpoint chains, so its real cost is higher than this baseline's.
"""
from __future__ import annotations

from dataclasses import dataclass

from ingressmesh.plan import NamespacePlan

TABLE = "kpbench"
PORT = 80
CHUNK = 1000


@dataclass(frozen=True)
class KpService:
    """One service as kube-proxy sees it: a chain name, its VIP, and its endpoint addresses."""
    chain: str
    vip: str
    endpoints: tuple[str, ...]


def services_from_plan(plan: NamespacePlan) -> list[KpService]:
    """The lb plan's active VIP entries, numbered as kube-proxy would name its chains."""
    return [KpService(f"svc_{i}", entry.vip, tuple(b.address for b in entry.active()))
            for i, entry in enumerate(plan.vips)]


def endpoint_chain(service: KpService, index: int) -> str:
    return f"ep_{service.chain[4:]}_{index}"


def _service_rule(service: KpService, chains: list[str]) -> str:
    body = ", ".join(f"{i} : goto {name}" for i, name in enumerate(chains))
    return (f"add rule ip {TABLE} {service.chain} "
            f"numgen random mod {len(chains)} vmap {{ {body} }}\n")


def _endpoint_lines(chain: str, address: str) -> list[str]:
    return [f"add chain ip {TABLE} {chain}\n", f"add rule ip {TABLE} {chain} dnat ip to {address}\n"]


def full_script(services: list[KpService]) -> str:
    """One transaction creating the whole table (kube-proxy's first full sync)."""
    lines = [f"add table ip {TABLE}\n",
             f"add map ip {TABLE} services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n",
             f"add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n",
             f"add rule ip {TABLE} prerouting ip daddr . meta l4proto . th dport vmap @services\n"]
    for service in services:
        chains = [endpoint_chain(service, i) for i in range(len(service.endpoints))]
        for chain, address in zip(chains, service.endpoints):
            lines += _endpoint_lines(chain, address)
        lines.append(f"add chain ip {TABLE} {service.chain}\n")
        lines.append(_service_rule(service, chains))
    for start in range(0, len(services), CHUNK):
        body = ", ".join(f"{s.vip} . tcp . {PORT} : goto {s.chain}" for s in services[start:start + CHUNK])
        lines.append(f"add element ip {TABLE} services {{ {body} }}\n")
    return "".join(lines)


def add_endpoint_script(service: KpService, address: str) -> tuple[str, KpService]:
    """One endpoint added: a new endpoint chain plus the service chain flushed and rewritten."""
    grown = KpService(service.chain, service.vip, service.endpoints + (address,))
    chains = [endpoint_chain(grown, i) for i in range(len(grown.endpoints))]
    lines = _endpoint_lines(chains[-1], address)
    lines += [f"flush chain ip {TABLE} {grown.chain}\n", _service_rule(grown, chains)]
    return "".join(lines), grown


def remove_endpoint_script(service: KpService) -> tuple[str, KpService]:
    """The last endpoint removed: the service chain rewritten, then the endpoint chain deleted.

    kube-proxy defers the chain deletion to a later sync; doing it in the same transaction
    here only makes the baseline cheaper to reason about (same element count either way).
    """
    shrunk = KpService(service.chain, service.vip, service.endpoints[:-1])
    chains = [endpoint_chain(shrunk, i) for i in range(len(shrunk.endpoints))]
    gone = endpoint_chain(service, len(service.endpoints) - 1)
    lines = [f"flush chain ip {TABLE} {shrunk.chain}\n", _service_rule(shrunk, chains),
             f"flush chain ip {TABLE} {gone}\n", f"delete chain ip {TABLE} {gone}\n"]
    return "".join(lines), shrunk
