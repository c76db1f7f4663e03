"""What an agent leaves behind when it is told to stop (`--on-stop`).

keep      the rules stay (systemd: a restart or an upgrade must not cut traffic; `ingressmesh
          cleanup` removes them by hand)
cleanup   every table ingressmesh made on this node goes, in the host namespace and in every
          namespace under Docker's netns directory (ingress, load balancers, containers' fast
          path), with our IPVS services and the FORWARD chain: `docker stack rm` leaves nothing
handover  as cleanup, unless a newer agent of this node is waiting for the rules (a start-first
          rolling update of the agent service, node_lease.py): then they stay for it

Docker's own IPVS services, chains and the VIP addresses on load-balancer endpoints (Docker adds
the same ones where its mesh works) are never touched.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Optional

from ..dataplane import backends
from ..dataplane.scan import has_table
from ..ipvs.kernel import IpvsError
from ..netns import Netns, NetnsError
from ..nft.errors import NftError
from .docker_layout import DockerNamespaces
from .forward_accept import remove_forward_accept
from .node_lease import NodeLease

log = logging.getLogger(__name__)
POLICIES = ("keep", "cleanup", "handover")
HANDOVER_WAIT = 15.0  # seconds a stopped, waiting agent gives the older one to go (its stop grace is 30)
_FAILURES = (NftError, IpvsError, NetnsError, OSError, ValueError)


def node_namespaces(namespaces: DockerNamespaces) -> list[Netns]:
    """The host namespace and every namespace file in Docker's netns directory."""
    found = [Netns("")]
    try:
        directory = namespaces.netns_dir()
        found += [Netns(os.path.join(directory, name)) for name in sorted(os.listdir(directory))]
    except OSError as err:
        log.warning("cannot list Docker's namespaces (%s): only the host namespace is cleaned", err)
    return found


def remove_node_rules(namespaces: DockerNamespaces, backend: str) -> dict[str, str]:
    """Remove ingressmesh's tables (and IPVS services) everywhere on this node; errors by path."""
    chosen = backends.resolve(backend)
    errors: dict[str, str] = {}
    removed, started = 0, time.monotonic()
    for netns in node_namespaces(namespaces):
        try:
            if not has_table(netns):
                continue
            try:
                backends.factory(chosen)(netns).cleanup()
            except _FAILURES:
                if chosen == "nftables":
                    raise
                backends.factory("nftables")(netns).cleanup()  # a container's fast-path table
            removed += 1
        except _FAILURES as err:
            errors[netns.path or "(host)"] = str(err)
    try:
        remove_forward_accept()
    except OSError as err:
        errors["(host) FORWARD"] = str(err)
    log.info("removed ingressmesh's tables from %d namespaces in %.1f s%s", removed, time.monotonic() - started,
             f"; failed in {sorted(errors)}" if errors else "")
    return errors


def leave_node(policy: str, lease: Optional[NodeLease], namespaces: DockerNamespaces, backend: str) -> str:
    """Apply the stop policy; a word for the log and the tests: kept, handed over, removed, failed."""
    if policy == "keep":
        return "kept"
    if policy == "handover" and lease is not None:
        newer = lease.newer_alive()
        if newer:
            log.info("a newer agent of this node is waiting (%s): leaving the rules to it", ", ".join(newer))
            return "handed over"
    return "failed" if remove_node_rules(namespaces, backend) else "removed"


def leave_before_taking_over(policy: str, lease: NodeLease, namespaces: DockerNamespaces, backend: str,
                             timeout: float = HANDOVER_WAIT) -> str:
    """For an agent stopped while it waited for an older one (`docker stack rm` during a rolling
    update, or an update rolled back).  The older agent hands its rules over when it stops and
    sees this one waiting, so: if it goes within `timeout`, the rules are now this agent's and it
    leaves them as `policy` says; if it keeps running, they are still its own: touch nothing."""
    if not lease.wait_for_older(threading.Event(), timeout=timeout):
        log.info("stopped while an older agent still runs on this node: its rules are left to it")
        return "left to the older agent"
    return leave_node(policy, lease, namespaces, backend)
