"""IPVS in one namespace through pyroute2, plus the namespace settings IPVS needs.

pyroute2 quirks (DESIGN §5): IPVSDest defaults to direct routing (fwd_method 3), so NAT (0)
is always passed explicitly; the socket is opened inside the namespace with flags=0 so a
missing namespace is an error rather than silently created.
"""
from __future__ import annotations

import socket
from typing import Iterable

from ..netns import Netns, NetnsError
from .diff import KernelService, Op, ours
from .desired import MARK_BASE, MARK_MASK

FWD_MASQ = 0  # IPVS NAT forwarding ("masquerading")
ROUTE_TABLE = 19742  # policy-routing table that delivers marked packets locally
RULE_PRIORITY = 9742
# IPVS routes the packets it forwards with their mark still set: without this rule, which
# sends lookups for locally sent packets (iif lo) to the main table first, the mark rule
# would route them straight back to this namespace instead of to the task.
OUTPUT_RULE_PRIORITY = 9741

# Docker's settings (DESIGN §3): reuse no IPVS connection across a closed one, drop
# connections to a deleted real server at once, and keep conntrack entries for SNAT.
SYSCTLS = (("net.ipv4.vs.conn_reuse_mode", "0"), ("net.ipv4.vs.expire_nodest_conn", "1"),
           ("net.ipv4.vs.expire_quiescent_template", "1"), ("net.ipv4.vs.conntrack", "1"),
           ("net.ipv4.ip_forward", "1"))


class IpvsError(RuntimeError):
    """The kernel refused an IPVS change, or IPVS is not available."""


class KernelIpvs:
    def __init__(self, netns: Netns):
        self.netns = netns

    def _socket(self):
        from pyroute2 import IPVS
        if not self.netns.exists():
            raise NetnsError(f"network namespace {self.netns.path} does not exist")
        try:
            return IPVS(netns=self.netns.path, flags=0) if self.netns.path else IPVS()
        except Exception as err:  # pyroute2 raises several types when the family is missing
            raise IpvsError(f"IPVS is not available in {self.netns.name}: {err}") from None

    def dump(self) -> dict[int, KernelService]:
        """ingressmesh's fwmark services in this namespace, with their real servers."""
        from pyroute2 import IPVSDest, IPVSService
        found = {}
        ipvs = self._socket()
        try:
            for message in ipvs.service("dump"):
                service = IPVSService.from_message(message)
                mark = service.get("fwmark") or 0
                if not ours(mark):
                    continue
                dests = {}
                for raw in ipvs.dest("dump", service=service):
                    dest = IPVSDest.from_message(raw)
                    # from_message() reports fwd_method 3 even for NAT: read the raw attribute.
                    # A real server that is not NAT is reported as weight -1, so the diff
                    # always "changes" it back to what we want.
                    nat = raw.get_nested("IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_FWD_METHOD") == FWD_MASQ
                    dests[(dest.get("addr"), dest.get("port") or 0)] = dest.get("weight") if nat else -1
                found[mark] = KernelService(mark, service.get("sched_name"), dests)
        finally:
            ipvs.close()
        return found

    def run(self, ops: Iterable[Op]) -> None:
        from pyroute2 import IPVSDest, IPVSService
        ops = list(ops)
        if not ops:
            return
        ipvs = self._socket()
        try:
            for op in ops:
                key = IPVSService(fwmark=op.mark, af=socket.AF_INET)
                try:
                    if op.verb in ("add_service", "set_service"):
                        full = IPVSService(fwmark=op.mark, af=socket.AF_INET, sched_name=op.scheduler,
                                           netmask="255.255.255.255")
                        ipvs.service("add" if op.verb == "add_service" else "set", service=full)
                    elif op.verb == "del_service":
                        ipvs.service("del", service=key)
                    else:
                        address, port = op.dest
                        dest = IPVSDest(addr=address, port=port, weight=op.weight, fwd_method=FWD_MASQ)
                        ipvs.dest({"add_dest": "add", "set_dest": "set", "del_dest": "del"}[op.verb],
                                  service=key, dest=dest)
                except Exception as err:
                    raise IpvsError(f"IPVS {op.verb} mark 0x{op.mark:x} {op.dest or op.scheduler} "
                                    f"refused in {self.netns.name}: {err}") from None
        finally:
            ipvs.close()

    def prepare(self, timeouts: tuple[int, int, int], local_delivery: bool) -> None:
        """Sysctls, IPVS timeouts and (for VIPs) local delivery of marked packets."""
        self.dump()  # opening the socket loads ip_vs, which creates net.ipv4.vs.*
        for key, value in SYSCTLS:
            if self.netns.sysctl(key) is None:
                raise IpvsError(f"{key} is missing in {self.netns.name}: is ip_vs loaded?")
            self.netns.set_sysctl(key, value)
        tcp, tcpfin, udp = timeouts
        proc = self.netns.run(["ipvsadm", "--set", str(tcp), str(tcpfin), str(udp)], check=False)
        if proc.returncode != 0:
            raise IpvsError(f"cannot set IPVS timeouts in {self.netns.name} (is ipvsadm installed?): "
                            f"{proc.stderr.strip()}")
        if local_delivery:
            self._route_marks_locally()

    def _route_marks_locally(self) -> None:
        mark = f"0x{MARK_BASE:x}/0x{MARK_MASK:x}"
        rules = self.netns.run(["ip", "rule", "show"]).stdout
        if f"{OUTPUT_RULE_PRIORITY}:" not in rules:
            self.netns.run(["ip", "rule", "add", "priority", str(OUTPUT_RULE_PRIORITY), "iif", "lo",
                            "lookup", "main"])
        if f"{RULE_PRIORITY}:" not in rules:
            self.netns.run(["ip", "rule", "add", "priority", str(RULE_PRIORITY), "fwmark", mark,
                            "lookup", str(ROUTE_TABLE)])
        self.netns.run(["ip", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE)])

    def unprepare(self) -> None:
        """Remove the policy routing again (cleanup)."""
        for argv in (["ip", "rule", "del", "priority", str(RULE_PRIORITY)],
                     ["ip", "rule", "del", "priority", str(OUTPUT_RULE_PRIORITY)],
                     ["ip", "route", "flush", "table", str(ROUTE_TABLE)]):
            try:
                self.netns.run(argv, check=False)
            except NetnsError:
                pass
