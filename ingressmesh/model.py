"""Neutral cluster model: what the planner needs to know about a swarm, with no Docker types.

Every class is a frozen dataclass so a Cluster can be shared, hashed and compared freely;
collections are tuples for the same reason.  Validation lives in `snapshot.py` (the JSON form).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

PROTOCOLS = ("tcp", "udp")
PUBLISH_MODES = ("ingress", "host")
ENDPOINT_MODES = ("vip", "dnsrr")
HEALTH_STATES = ("none", "starting", "healthy", "unhealthy")
NODE_ROLES = ("manager", "worker")
NODE_AVAILABILITIES = ("active", "pause", "drain")
NODE_STATES = ("ready", "down", "unknown", "disconnected")
TASK_STATES = (
    "new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running",
    "complete", "shutdown", "failed", "rejected", "remove", "orphaned",
)


def _address_where(entries, field_name: str, wanted: str) -> Optional[str]:
    """The address of the first entry whose `field_name` is `wanted` (lists are short)."""
    return next((e.address for e in entries if getattr(e, field_name) == wanted), None)


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    hostname: str
    address: str
    role: str = "worker"
    availability: str = "active"
    state: str = "ready"


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """An address that one node holds on a network (its load-balancer endpoint)."""
    node_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    subnet: str
    ingress: bool = False
    # Per node, the address of that node's load-balancer endpoint on this network.  For the
    # ingress network this is the ingress namespace's own address (Docker's ingress-sbox).
    lb_addresses: tuple[NodeAddress, ...] = ()

    def lb_address(self, node_id: str) -> Optional[str]:
        return _address_where(self.lb_addresses, "node_id", node_id)


@dataclass(frozen=True, slots=True)
class PublishedPort:
    protocol: str
    published_port: int  # 0 only in host mode: Docker picks one per task
    target_port: int
    publish_mode: str = "ingress"


@dataclass(frozen=True, slots=True)
class VirtualIP:
    network_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    endpoint_mode: str = "vip"
    vips: tuple[VirtualIP, ...] = ()
    ports: tuple[PublishedPort, ...] = ()
    # When the service was created (epoch seconds; 0.0 when unknown, e.g. an older snapshot):
    # the earliest claimant of an L7 host owns it, so a newcomer cannot take it over.
    created: float = 0.0

    def vip_on(self, network_id: str) -> Optional[str]:
        return _address_where(self.vips, "network_id", network_id)


@dataclass(frozen=True, slots=True)
class NetworkAddress:
    network_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    service_id: str
    node_id: str
    slot: int = 0
    desired_state: str = "running"
    current_state: str = "running"
    addresses: tuple[NetworkAddress, ...] = ()
    health: str = "none"
    # When the state or health last changed (epoch seconds); the planner uses it to end a drain.
    since: float = 0.0

    def address_on(self, network_id: str) -> Optional[str]:
        return _address_where(self.addresses, "network_id", network_id)


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: tuple[Node, ...] = ()
    networks: tuple[Network, ...] = ()
    services: tuple[Service, ...] = ()
    tasks: tuple[Task, ...] = field(default=())

    def node(self, node_id: str) -> Optional[Node]:
        return next((n for n in self.nodes if n.id == node_id), None)

    def ingress_network(self) -> Optional[Network]:
        return next((n for n in self.networks if n.ingress), None)
