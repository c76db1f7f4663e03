"""Docker API objects (plain dicts from the SDK) → the neutral model.  Pure: no I/O.

Each object is converted on its own and checked with the snapshot's validators, so one bad
service (an absurd port, a broken spec) is refused by name and the rest of the swarm still
converges.  Docker's field names stop here: nothing past this module sees them.
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

from .. import model
from ..snapshot import SnapshotError, item_from_dict

TASK_LABEL = "com.docker.swarm.task.id"


def _checked(kind: str, data: dict, label: str):
    """The snapshot's own checks on one object; the error names the Docker object first."""
    try:
        return item_from_dict(kind, data)
    except SnapshotError as err:
        raise SnapshotError(f"{label}: {err}") from None


def _plain_address(cidr: str) -> str:
    return cidr.split("/", 1)[0]


def parse_timestamp(text: str) -> float:
    """Docker's RFC 3339 timestamps carry nanoseconds; Python parses microseconds."""
    if not text:
        return 0.0
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = rest[:6].ljust(6, "0") if rest else "000000"
    try:
        moment = datetime.datetime.fromisoformat(f"{head}.{fraction}+00:00")
    except ValueError:
        return 0.0
    return moment.timestamp()


def node_address(node: dict) -> str:
    """Status.Addr, except on managers that report 0.0.0.0 there: then the raft address."""
    addr = (node.get("Status") or {}).get("Addr", "")
    if addr in ("", "0.0.0.0"):
        addr = ((node.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
    return addr


def convert_node(node: dict) -> model.Node:
    spec, status = node.get("Spec") or {}, node.get("Status") or {}
    return _checked("node", {
        "id": node.get("ID"), "hostname": (node.get("Description") or {}).get("Hostname"),
        "address": node_address(node), "role": spec.get("Role", "worker"),
        "availability": spec.get("Availability", "active"), "state": status.get("State", "unknown"),
    }, f"node {node.get('ID')!r}")


def network_subnet(network: dict) -> Optional[str]:
    """The first IPv4 subnet of a network (Docker allocates VIPs and tasks from it)."""
    for config in (network.get("IPAM") or {}).get("Config") or []:
        subnet = config.get("Subnet", "")
        if subnet and ":" not in subnet:
            return subnet
    return None


def is_swarm_overlay(network: dict) -> bool:
    return network.get("Driver") == "overlay" and network.get("Scope") == "swarm"


def convert_network(network: dict) -> Optional[model.Network]:
    """None for a network the mesh has nothing to do with (no IPv4 subnet yet)."""
    subnet = network_subnet(network)
    if subnet is None:
        return None
    return _checked("network", {
        "id": network.get("Id") or network.get("ID"), "name": network.get("Name"), "subnet": subnet,
        "ingress": bool(network.get("Ingress")),
    }, f"network {network.get('Name')!r}")


def _port(port: dict) -> dict:
    """Docker omits PublishedPort when it picks one (host mode: per task); 0 says so, and an
    ingress-mode port without one is still refused by name."""
    return {"protocol": port.get("Protocol", "tcp"), "published_port": port.get("PublishedPort", 0),
            "target_port": port.get("TargetPort"), "publish_mode": port.get("PublishMode", "ingress")}


def service_ports(service: dict) -> list[dict]:
    """Endpoint.Ports once swarm allocated them (published ports it chose), else the spec's."""
    endpoint = service.get("Endpoint") or {}
    ports = endpoint.get("Ports")
    if ports is None:
        ports = ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    return [_port(p) for p in ports if p.get("Protocol", "tcp") != "sctp"]


def convert_service(service: dict) -> model.Service:
    spec = service.get("Spec") or {}
    name = spec.get("Name") or service.get("ID")
    vips = [{"network_id": v.get("NetworkID"), "address": _plain_address(v.get("Addr", ""))}
            for v in (service.get("Endpoint") or {}).get("VirtualIPs") or [] if v.get("Addr")]
    mode = (spec.get("EndpointSpec") or {}).get("Mode", "vip")
    return _checked("service", {
        "id": service.get("ID"), "name": name, "labels": spec.get("Labels") or {},
        "endpoint_mode": mode, "vips": vips if mode == "vip" else [], "ports": service_ports(service),
        "created": parse_timestamp(service.get("CreatedAt", "")),
    }, f"service {name!r}")


def has_healthcheck(service: dict) -> bool:
    """Whether the service's spec defines a health check (then a new task starts unhealthy)."""
    container = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    test = (container.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def convert_task(task: dict) -> Optional[model.Task]:
    """None for a task that holds no place in the mesh yet (not scheduled to a node)."""
    if not task.get("NodeID"):
        return None
    status = task.get("Status") or {}
    addresses = []
    for attachment in task.get("NetworksAttachments") or []:
        network_id = (attachment.get("Network") or {}).get("ID")
        for cidr in attachment.get("Addresses") or []:
            if ":" not in cidr:
                addresses.append({"network_id": network_id, "address": _plain_address(cidr)})
                break
    return _checked("task", {
        "id": task.get("ID"), "service_id": task.get("ServiceID"), "node_id": task.get("NodeID"),
        "slot": task.get("Slot") or 0, "desired_state": task.get("DesiredState", "running"),
        "current_state": status.get("State", "new"), "addresses": addresses,
        "since": parse_timestamp(status.get("Timestamp", "")),
    }, f"task {task.get('ID')!r}")


def task_attachments(tasks: list[dict]) -> frozenset:
    """(node id, network id) for each task on a node that is not dead (swarm frees the addresses
    once both its desired and current state are past running), per network it is attached to.
    Network-attachment tasks of standalone containers count too: they have no service."""
    past = model.TASK_STATES.index("running")

    def index(state) -> int:
        return model.TASK_STATES.index(state) if state in model.TASK_STATES else len(model.TASK_STATES)
    found = set()
    for task in tasks:
        node_id = task.get("NodeID")
        status = (task.get("Status") or {}).get("State")
        if not node_id or (index(task.get("DesiredState")) > past and index(status) > past):
            continue
        for attachment in task.get("NetworksAttachments") or []:
            network_id = (attachment.get("Network") or {}).get("ID")
            if network_id:
                found.add((node_id, network_id))
    return frozenset(found)


def convert_all(items: list[dict], convert) -> tuple[list[Any], list[str]]:
    """Convert each item; a refused one becomes an error message instead of stopping the rest."""
    done, errors = [], []
    for item in items:
        try:
            converted = convert(item)
        except SnapshotError as err:
            errors.append(str(err))
            continue
        if converted is not None:
            done.append(converted)
    return done, errors
