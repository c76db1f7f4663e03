"""IPVS in one namespace through pyroute2, plus the namespace settings IPVS needs.

pyroute2 quirks (DESIGN §5): IPVSDest defaults to direct routing (fwd_method 3), so NAT (0)
is always passed explicitly; the socket is opened inside the namespace with flags=0 so a
missing namespace is an error rather than silently created.
"""
from __future__ import annotations

import logging
import socket
from typing import Iterable

from ..netns import Netns, NetnsError
from .diff import KernelService, Op, ours
from .desired import MARK_BASE, MARK_MASK

FWD_MASQ = 0  # IPVS NAT forwarding ("masquerading")
NETLINK_GENERIC = 16  # the netlink protocol IPVS answers on (linux/netlink.h)
ROUTE_TABLE = 19742  # policy-routing table that delivers marked packets locally
RULE_PRIORITY = 9742
# IPVS routes the packets it forwards with their mark still set: without this rule, which
# sends lookups for our marked, locally sent packets (iif lo) to the main table first, the
# mark rule would route them straight back to this namespace instead of to the task.
OUTPUT_RULE_PRIORITY = 9741
_MARK = f"0x{MARK_BASE:x}/0x{MARK_MASK:x}"
_RULES = ((str(OUTPUT_RULE_PRIORITY), "iif", "lo", "fwmark", _MARK, "lookup", "main"),
          (str(RULE_PRIORITY), "fwmark", _MARK, "lookup", str(ROUTE_TABLE)))

# Docker's settings (DESIGN §3): reuse no IPVS connection across a closed one, drop
# connections to a deleted real server at once, and keep conntrack entries for SNAT.
SYSCTLS = (("net.ipv4.vs.conn_reuse_mode", "0"), ("net.ipv4.vs.expire_nodest_conn", "1"),
           ("net.ipv4.vs.expire_quiescent_template", "1"), ("net.ipv4.vs.conntrack", "1"),
           ("net.ipv4.ip_forward", "1"))


log = logging.getLogger(__name__)


class IpvsError(RuntimeError):
    """The kernel refused an IPVS change, or IPVS is not available."""


class KernelIpvs:
    """ingressmesh's IPVS services in one namespace: dump, change, and the settings around them."""

    def __init__(self, netns: Netns):
        self.netns = netns

    def _socket(self):
        """An IPVS netlink socket opened in the namespace by this thread (setns is per thread).
        pyroute2's own `netns=` forks the agent for every socket and gives the child 2 s to
        answer: in a busy agent with several threads, under load, that made applies late."""
        from pyroute2 import IPVS
        if not self.netns.exists():
            raise NetnsError(f"network namespace {self.netns.path} does not exist")
        sock = None
        try:
            with self.netns.entered():
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_GENERIC)
            return IPVS(use_socket=sock)
        except Exception as err:  # pyroute2 raises several types when the family is missing
            if sock is not None:
                sock.close()
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
                        self._service(ipvs, op)
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

    def _service(self, ipvs, op: Op) -> None:
        """Create or change a service; a scheduler this kernel lacks (mh needs ip_vs_mh) falls
        back to rr with a warning, rather than leaving the front-end without a service."""
        from pyroute2 import IPVSService
        verb = "add" if op.verb == "add_service" else "set"
        for scheduler in dict.fromkeys((op.scheduler, "rr")):
            try:
                ipvs.service(verb, service=IPVSService(fwmark=op.mark, af=socket.AF_INET, sched_name=scheduler,
                                                        netmask="255.255.255.255"))
                return
            except Exception as err:
                if scheduler == "rr":
                    raise
                log.warning("%s: scheduler %s refused (%s); using rr", self.netns.name, scheduler, err)

    def prepare(self, timeouts: tuple[int, int, int], local_delivery: bool) -> None:
        """Sysctls, IPVS timeouts and (for VIPs) local delivery of marked packets."""
        self.dump()  # opening the socket loads ip_vs, which creates net.ipv4.vs.*
        for key, value in SYSCTLS:
            current = self.netns.sysctl(key)
            if current is None:
                raise IpvsError(f"{key} is missing in {self.netns.name}: is ip_vs loaded?")
            if current != value:  # no write when right already (a container may not write /proc/sys)
                self.netns.set_sysctl(key, value)
        tcp, tcpfin, udp = timeouts
        proc = self.netns.run(["ipvsadm", "--set", str(tcp), str(tcpfin), str(udp)], check=False)
        if proc.returncode != 0:
            raise IpvsError(f"cannot set IPVS timeouts in {self.netns.name} (is ipvsadm installed?): "
                            f"{proc.stderr.strip()}")
        if local_delivery:
            self._route_marks_locally()

    def _route_marks_locally(self) -> None:
        present = self.netns.run(["ip", "rule", "show"]).stdout
        for rule in _RULES:
            if not _has_rule(present, rule):
                self.netns.run(["ip", "rule", "add", "priority", *rule])
        self.netns.run(["ip", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE)])

    def unprepare(self) -> None:
        """Remove exactly our policy rules and table again (cleanup); nobody else's."""
        present = self.netns.run(["ip", "rule", "show"], check=False).stdout
        for rule in _RULES:
            if _has_rule(present, rule):
                self.netns.run(["ip", "rule", "del", "priority", *rule], check=False)
        self.netns.run(["ip", "route", "flush", "table", str(ROUTE_TABLE)], check=False)


def _has_rule(listing: str, rule: tuple) -> bool:
    """Whether `ip rule show` lists this exact rule (same priority, all of its selectors);
    ip prints the selectors in its own order, so compare them as a set."""
    for line in listing.splitlines():
        priority, _, rest = line.partition(":")
        if priority.strip() == rule[0] and set(rule[1:]) <= set(rest.split()):
            return True
    return False
