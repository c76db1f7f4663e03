"""Reply routes in a task's own namespace, so it can see the client's address (issue 21).

When the ingress namespace stops SNATing a service (plan_source_ip.py), the task's replies go
to the client's address, which its own routes send out of its default route (its node's
`docker_gwbridge`) — the wrong way: the DNAT to undo lives in the conntrack table of the ingress
namespace that received the connection, maybe on another node.  So, in the task's namespace:

- table `ip ingressmesh_src`: a connection that arrives on the ingress interface gets, in its
  conntrack mark, the mark of the ingress namespace that sent it, looked up by the frame's
  source MAC (map `ingress_marks`); its packets carry that mark as their packet mark on the way
  in (so reverse-path filtering, with `src_valid_mark`, checks them against the route back) and
  on the way out (a `route` chain: marked replies are routed again);
- per node, `ip rule fwmark <mark> lookup <mark>` and a table `<mark>` holding `default via
  <that node's ingress address> dev <ingress interface>`;
- `net.ipv4.tcp_fwmark_accept=1`: an accepted TCP socket takes its SYN's mark, so even its
  SYN-ACK is routed back that way (a task with no default route at all still answers);
- UDP: a reply from an unconnected socket gets its source address from the route to the client
  before any hook runs, i.e. from the default route's interface; for each published UDP target
  port, rules send the port's traffic that would take the default route to the first node's
  table instead (so the reply leaves from the ingress address, matches its conntrack entry and is
  then routed again to the right node by its mark).

A connection is marked at its first packet from the ingress interface once the table exists, not
only at its first packet: one whose SYN came a moment before (a task that got traffic before its
agent programmed it) answered that SYN the wrong way, and is marked and answered right when the
client sends the SYN again (~1 s later) instead of never.  Everything here is this task's own namespace: nothing outside it changes.
"""
from __future__ import annotations

import json
from ..netns import Netns, NetnsError
from ..nft.libnft import LibNft
from ..plan_source_ip import TaskReplyRoutes

TABLE = "ingressmesh_src"
MARK_PREF, UDP_MAIN_PREF, UDP_PREF = 9000, 9001, 9002  # ip rule priorities that are ours


class ReplyRoutesError(RuntimeError):
    """A task's namespace could not be given its reply routes; the message names the task."""


def table_script(iface: str, routes: TaskReplyRoutes) -> str:
    """The whole table, replaced in one transaction."""
    marks = ", ".join(f"{p.mac} : {p.mark:#010x}" for p in routes.peers)
    elements = f" elements = {{ {marks} }};" if marks else ""
    return (f"table ip {TABLE}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n"
            f"  map ingress_marks {{ type ether_addr : mark;{elements} }}\n"
            f"  chain prerouting {{ type filter hook prerouting priority mangle; policy accept;\n"
            f"    iifname {json.dumps(iface)} ct mark 0 ct mark set ether saddr map @ingress_marks\n"
            f"    iifname {json.dumps(iface)} ct mark != 0 meta mark set ct mark; }}\n"
            f"  chain output {{ type route hook output priority mangle; policy accept;\n"
            f"    ct direction reply ct mark != 0 meta mark set ct mark; }}\n"
            f"}}\n")


def _interface(netns: Netns, address: str, task: str) -> str:
    found = json.loads(netns.run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in found:
        if any(a.get("local") == address for a in link.get("addr_info", [])):
            return link["ifname"]
    raise ReplyRoutesError(f"task {task}: no interface holds its ingress address {address} in {netns.name}")


def _our_rules(netns: Netns) -> list[dict]:
    rules = json.loads(netns.run(["ip", "-j", "-4", "rule", "show"]).stdout or "[]")
    return [r for r in rules if r.get("priority") in (MARK_PREF, UDP_MAIN_PREF, UDP_PREF)]


def _rule_args(rule: dict) -> list[str]:
    """`ip rule del` arguments that name exactly one of our rules, from its JSON listing."""
    args = ["pref", str(rule["priority"])]
    if "fwmark" in rule:
        args += ["fwmark", rule["fwmark"]]
    if "ipproto" in rule:
        args += ["ipproto", str(rule["ipproto"])]
    if "sport" in rule:
        args += ["sport", str(rule["sport"])]
    return args


def route_commands(iface: str, routes: TaskReplyRoutes, current: list[dict]) -> list[str]:
    """`ip -batch` lines that make our rules and tables what `routes` says."""
    lines = []
    for rule in current:  # removed and re-added: a handful of rules, one batch
        lines.append("rule del " + " ".join(_rule_args(rule)))
    for peer in routes.peers:
        lines.append(f"route replace default via {peer.address} dev {iface} table {peer.mark}")
        lines.append(f"rule add pref {MARK_PREF} fwmark {peer.mark:#x} lookup {peer.mark}")
    if routes.peers:
        first = routes.peers[0].mark
        for port in routes.udp_ports:
            lines.append(f"rule add pref {UDP_MAIN_PREF} ipproto udp sport {port} lookup main suppress_prefixlength 0")
            lines.append(f"rule add pref {UDP_PREF} ipproto udp sport {port} lookup {first}")
    return lines


def apply_reply_routes(netns: Netns, routes: TaskReplyRoutes) -> str:
    """Program the task's namespace; returns the ingress interface's name."""
    task = f"{routes.service}/{routes.task_id}"
    try:
        iface = _interface(netns, routes.address, task)
        nft = LibNft(netns)
        try:
            nft.run_script(table_script(iface, routes))
        finally:
            nft.close()
        batch = route_commands(iface, routes, _our_rules(netns))
        netns.run(["ip", "-batch", "-"], stdin="\n".join(batch) + "\n")
        netns.set_sysctl(f"net.ipv4.conf.{iface}.src_valid_mark", "1")
        netns.set_sysctl("net.ipv4.tcp_fwmark_accept", "1")
    except (NetnsError, OSError) as err:
        raise ReplyRoutesError(f"task {task}: cannot program reply routes in {netns.name}: {err}") from None
    return iface


def remove_reply_routes(netns: Netns) -> None:
    """Remove our table and rules (the per-node tables go with their rules' owners: routes in a
    table nobody looks up do nothing, and they are replaced, not added, next time)."""
    nft = LibNft(netns)
    try:
        nft.run_script(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
    finally:
        nft.close()
    lines = ["rule del " + " ".join(_rule_args(r)) for r in _our_rules(netns)]
    if lines:
        netns.run(["ip", "-batch", "-"], stdin="\n".join(lines) + "\n")
