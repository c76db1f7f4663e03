"""The published-port paths with the client's own address kept (issue 21), for bench/data_path.py.

Switched on only while a `kept` path runs, so every other path is measured exactly as before:
both nodes' plans are applied as by agents started with `--source-ip preserve` (the ingress
namespaces stop SNATing the measured service's published port) and the task's namespace gets
its reply routes (dataplane/reply_routes.py: the connection's conntrack mark from the sending
ingress namespace's MAC, one fwmark rule and table per node); switched off, the plans go back
to SNAT and the task's table and rules are removed.  The ingress namespaces' MACs are Docker's
(02:42 + address), as on a real overlay.

The outside client dials node 1's and node 2's published port from two halves of its port
range: with the address kept, the task sees the client's own address on both paths, so a
4-tuple left in TIME_WAIT by one path would meet a SYN of the other, whose TCP timestamps
have another offset (the client derives it from the address it dialled), and the task's PAWS
check would refuse it (1 s SYN retries): a benchmark artefact, not a cost of either path.
"""
from __future__ import annotations

import time

from ingressmesh.dataplane.apply import NodeApplier
from ingressmesh.dataplane.reply_routes import apply_reply_routes, remove_reply_routes
from ingressmesh.netns import Netns
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.plan_source_ip import PRESERVE, SNAT, docker_overlay_mac, mark_of, plan_reply_routes

import data_path_helpers as d

CLIENT = "10.99.0.100"  # the testbed's outside client
PORTS = {1: "1024 33279", 2: "33280 65535", None: "1024 65535"}  # the outside client's, per node dialled


class SourceKept:
    def __init__(self, bed: d.BenchTestbed, appliers: dict[int, NodeApplier], cluster):
        self.bed, self.appliers, self.cluster = bed, appliers, cluster
        self.on = False
        self.ports = PORTS[None]
        for i in appliers:
            bed.run(bed.ingress_ns(i), ["ip", "link", "set", "eth0", "address",
                                        docker_overlay_mac(bed.ingress_address(i))])

    def switch(self, node) -> None:
        """Keep source addresses for connections through `node`'s published port (1 or 2), or
        SNAT (None) as the other paths expect."""
        on = node is not None
        if on != self.on:
            mode = PRESERVE if on else SNAT
            for i, applier in self.appliers.items():
                report = applier.apply(plan_node(self.cluster, f"node{i}", PlanOptions(now=time.time(),
                                                                                       source_ip=mode)))
                if not report.ok:
                    raise RuntimeError(f"node{i} with source_ip {mode}: {report.errors}")
            task = Netns.from_ref(self.bed.task_ns(d.TASK.name))
            if on:
                routes = plan_reply_routes(self.cluster, f"node{d.TASK.node}", {d.TASK.name: d.TASK.name}, PRESERVE)
                if len(routes) != 1:
                    raise RuntimeError(f"expected reply routes for {d.TASK.name}, planned {routes}")
                apply_reply_routes(task, routes[0])
            else:
                remove_reply_routes(task)
            self.on = on
        if PORTS[node] != self.ports:
            self.bed.run(self.bed.ext_ns, ["sysctl", "-qw", f"net.ipv4.ip_local_port_range={PORTS[node]}"])
            self.ports = PORTS[node]

    def check(self, node: int) -> None:
        """After a request through `node`'s published port: the task's conntrack holds a flow from
        the client's own address, marked with that node's ingress namespace (the way back)."""
        mark = mark_of(self.bed.ingress_address(node))
        listed = self.bed.run(self.bed.task_ns(d.TASK.name), ["conntrack", "-L", "-p", "tcp", "-s", CLIENT,
                                                              "--mark", str(mark)], check=False)
        if f"src={CLIENT}" not in listed.stdout:
            raise RuntimeError(f"through node{node}: the task saw no connection from {CLIENT} marked {mark:#x}: "
                               f"{listed.stdout.strip()[-300:]} {listed.stderr.strip()[-200:]}")
