"""The stable JSON form of a Cluster (the snapshot format) with validation that names the bad field.

Loading never half-succeeds: either every field is valid and a Cluster comes back, or
`SnapshotError` says exactly which field is wrong, e.g.
``services[3].ports[0].protocol: 'tcpx' is not tcp or udp``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from typing import Any, Callable, Optional

from . import model

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# A node's hostname: up to 253 characters in dot-separated labels of up to 63 (RFC 1123).
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                       r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SnapshotError(ValueError):
    """A cluster snapshot that cannot be used; the message starts with the field's path."""


class _Reader:
    """Reads one JSON object, remembering the path so every error can name its field."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise SnapshotError(f"{path or 'snapshot'}: expected an object, got {_show(data)}")
        self.data, self.path = data, path

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, check: Callable[[Any, str], Any], default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise SnapshotError(f"{self._where(key)}: missing")
            return default
        return check(self.data[key], self._where(key))

    def items(self, key: str, build: Callable[["_Reader"], Any]) -> tuple:
        raw = self.data.get(key, [])
        if not isinstance(raw, list):
            raise SnapshotError(f"{self._where(key)}: expected a list, got {_show(raw)}")
        return tuple(build(_Reader(item, f"{self._where(key)}[{i}]")) for i, item in enumerate(raw))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice(*allowed: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if value not in allowed:
            options = " or ".join(allowed) if len(allowed) <= 2 else ", ".join(allowed)
            raise SnapshotError(f"{where}: {_show(value)} is not {options}")
        return value
    return check


def _pattern(regex: re.Pattern, what: str) -> Callable[[Any, str], str]:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise SnapshotError(f"{where}: {_show(value)} is not a valid {what}")
        return value
    return check


def _ipv4(value: Any, where: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise SnapshotError(f"{where}: {_show(value)} is not an IPv4 address") from None


def _subnet(value: Any, where: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except (ValueError, TypeError):
        raise SnapshotError(f"{where}: {_show(value)} is not an IPv4 subnet") from None


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise SnapshotError(f"{where}: {_show(value)} is not a port (1-65535)")
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SnapshotError(f"{where}: {_show(value)} is not a non-negative integer")
    return value


def _number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise SnapshotError(f"{where}: {_show(value)} is not a non-negative number")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SnapshotError(f"{where}: {_show(value)} is not true or false")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: {_show(value)} is not a string")
    return value


def _labels(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise SnapshotError(f"{where}: expected an object of strings, got {_show(value)}")
    for key, text in value.items():
        _text(text, f"{where}.{key}")
    return tuple(sorted(value.items()))


_node_id = _pattern(_ID, "id")


def _node(r: _Reader) -> model.Node:
    return model.Node(
        id=r.get("id", _node_id), hostname=r.get("hostname", _pattern(_HOSTNAME, "hostname")),
        address=r.get("address", _ipv4), role=r.get("role", _choice(*model.NODE_ROLES), "worker"),
        availability=r.get("availability", _choice(*model.NODE_AVAILABILITIES), "active"),
        state=r.get("state", _choice(*model.NODE_STATES), "ready"))


def _network(r: _Reader) -> model.Network:
    return model.Network(
        id=r.get("id", _node_id), name=r.get("name", _pattern(_NAME, "network name")),
        subnet=r.get("subnet", _subnet), ingress=r.get("ingress", _bool, False),
        lb_addresses=r.items("lb_addresses", lambda a: model.NodeAddress(
            node_id=a.get("node_id", _node_id), address=a.get("address", _ipv4))))


def _service(r: _Reader) -> model.Service:
    return model.Service(
        id=r.get("id", _node_id), name=r.get("name", _pattern(_NAME, "service name")),
        labels=r.get("labels", _labels, ()),
        endpoint_mode=r.get("endpoint_mode", _choice(*model.ENDPOINT_MODES), "vip"),
        vips=r.items("vips", lambda v: model.VirtualIP(
            network_id=v.get("network_id", _node_id), address=v.get("address", _ipv4))),
        ports=r.items("ports", _published_port),
        created=r.get("created", _number, 0.0))


def _published_port(p: _Reader) -> model.PublishedPort:
    """A host-mode port may have no published number (0): Docker then picks one per task on its
    node, which is Docker's business; the routing mesh only ever programs ingress-mode ports."""
    mode = p.get("publish_mode", _choice(*model.PUBLISH_MODES), "ingress")
    published = p.get("published_port", _port) if mode == "ingress" else p.get("published_port", _host_port, 0)
    return model.PublishedPort(protocol=p.get("protocol", _choice(*model.PROTOCOLS)), published_port=published,
                               target_port=p.get("target_port", _port), publish_mode=mode)


def _host_port(value: Any, where: str) -> int:
    """A host-mode published port: 1-65535, or 0 for "Docker picks one per task"."""
    return 0 if value == 0 and not isinstance(value, bool) else _port(value, where)


def _task(r: _Reader) -> model.Task:
    return model.Task(
        id=r.get("id", _node_id), service_id=r.get("service_id", _node_id),
        node_id=r.get("node_id", _node_id), slot=r.get("slot", _int, 0),
        desired_state=r.get("desired_state", _choice(*model.TASK_STATES), "running"),
        current_state=r.get("current_state", _choice(*model.TASK_STATES), "running"),
        addresses=r.items("addresses", lambda a: model.NetworkAddress(
            network_id=a.get("network_id", _node_id), address=a.get("address", _ipv4))),
        health=r.get("health", _choice(*model.HEALTH_STATES), "none"),
        since=r.get("since", _number, 0.0))


def _check_references(cluster: model.Cluster) -> None:
    """Cross-field checks: ids unique, references resolve, ports and addresses not claimed twice.

    A snapshot that passes can be planned without one entry silently shadowing another: the
    backends key their tables by published port and by VIP, so a duplicate would drop a service.
    """
    for kind, items in (("nodes", cluster.nodes), ("networks", cluster.networks),
                        ("services", cluster.services), ("tasks", cluster.tasks)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                raise SnapshotError(f"{kind}[{i}].id: {item.id!r} repeats {kind}[{seen[item.id]}]")
            seen[item.id] = i
    networks = {n.id for n in cluster.networks}
    services = {s.id for s in cluster.services}
    nodes = {n.id for n in cluster.nodes}
    claimed: dict[tuple[str, int], str] = {}
    for i, svc in enumerate(cluster.services):
        for j, vip in enumerate(svc.vips):
            if vip.network_id not in networks:
                raise SnapshotError(f"services[{i}].vips[{j}].network_id: {vip.network_id!r} is not a known network")
        for j, port in enumerate(svc.ports):
            if port.publish_mode != "ingress":
                continue  # a host-mode port is each task's own: it never shares the routing mesh
            key = (port.protocol, port.published_port)
            if key in claimed:
                raise SnapshotError(f"services[{i}].ports[{j}].published_port: {port.protocol}/"
                                    f"{port.published_port} is already published by {claimed[key]!r}")
            claimed[key] = svc.name
    for i, task in enumerate(cluster.tasks):
        if task.service_id not in services:
            raise SnapshotError(f"tasks[{i}].service_id: {task.service_id!r} is not a known service")
        if task.node_id not in nodes:
            raise SnapshotError(f"tasks[{i}].node_id: {task.node_id!r} is not a known node")
        for j, addr in enumerate(task.addresses):
            if addr.network_id not in networks:
                raise SnapshotError(f"tasks[{i}].addresses[{j}].network_id: {addr.network_id!r} is not a known network")
    if sum(1 for n in cluster.networks if n.ingress) > 1:
        raise SnapshotError("networks: more than one network has ingress: true")
    _check_addresses(cluster)


class _AddressBook:
    """Per network, who holds each address; `claim` rejects an address outside the subnet or
    already held, naming both the field and the holder."""

    def __init__(self, networks: tuple[model.Network, ...]):
        self.networks = {n.id: n for n in networks}
        self.subnets = {n.id: ipaddress.IPv4Network(n.subnet) for n in networks}
        self.holders: dict[tuple[str, str], str] = {}

    def claim(self, where: str, network_id: str, address: str, holder: Optional[str]) -> None:
        """Check `address` is in the network's subnet; `holder` None: check only that."""
        network = self.networks[network_id]
        if ipaddress.IPv4Address(address) not in self.subnets[network_id]:
            raise SnapshotError(f"{where}: {address!r} is not in network {network.name}'s subnet {network.subnet}")
        if holder is None:
            return
        key = (network_id, address)
        if key in self.holders:
            raise SnapshotError(f"{where}: {address!r} is already {self.holders[key]} on network {network.name!r}")
        self.holders[key] = holder


def _holds_address(task: model.Task) -> bool:
    """Whether a task still owns its addresses.  Swarm frees them once both the desired and the
    current state are past running (swarmkit's taskDead) but keeps them in the task record, so a
    dead task in the history may list an address a new task now has: that is not a conflict."""
    past_running = model.TASK_STATES.index("running")
    return not (model.TASK_STATES.index(task.desired_state) > past_running
                and model.TASK_STATES.index(task.current_state) > past_running)


def _check_addresses(cluster: model.Cluster) -> None:
    """Every address lies in its network's subnet, and no two holders (a node's load balancer, a
    service VIP, a live task) share one address on one network.  Runs after the references are
    known to resolve."""
    book = _AddressBook(cluster.networks)
    for i, network in enumerate(cluster.networks):
        for j, entry in enumerate(network.lb_addresses):
            book.claim(f"networks[{i}].lb_addresses[{j}].address", network.id, entry.address,
                       f"the load-balancer address of node {entry.node_id!r}")
    for i, svc in enumerate(cluster.services):
        on_networks: set[str] = set()
        for j, vip in enumerate(svc.vips):
            if vip.network_id in on_networks:
                raise SnapshotError(f"services[{i}].vips[{j}].network_id: {svc.name!r} already has a VIP on "
                                    f"network {book.networks[vip.network_id].name!r}")
            on_networks.add(vip.network_id)
            book.claim(f"services[{i}].vips[{j}].address", vip.network_id, vip.address, f"the VIP of {svc.name!r}")
    for i, task in enumerate(cluster.tasks):
        holder = f"the address of task {task.id!r}" if _holds_address(task) else None
        for j, addr in enumerate(task.addresses):
            book.claim(f"tasks[{i}].addresses[{j}].address", addr.network_id, addr.address, holder)


_ITEM_BUILDERS = {"node": _node, "network": _network, "service": _service, "task": _task}


def item_from_dict(kind: str, data: Any, where: str = ""):
    """One node, network, service or task checked on its own, errors prefixed with `where`.

    Providers use it to refuse one bad Docker object by name instead of a whole snapshot."""
    return _ITEM_BUILDERS[kind](_Reader(data, where))


def check_cluster(cluster: model.Cluster) -> model.Cluster:
    """The cross-object checks of `from_dict` on a Cluster built from already-checked objects
    (the controller's merge): ids, references, ports and addresses, without a JSON round trip."""
    _check_references(cluster)
    return cluster


def from_dict(data: Any) -> model.Cluster:
    root = _Reader(data, "")
    version = root.get("version", _int, FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise SnapshotError(f"version: {version} is not a supported format version ({FORMAT_VERSION})")
    cluster = model.Cluster(nodes=root.items("nodes", _node), networks=root.items("networks", _network),
                            services=root.items("services", _service), tasks=root.items("tasks", _task))
    _check_references(cluster)
    return cluster


def loads(text: str) -> model.Cluster:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SnapshotError(f"not JSON: {err}") from None
    return from_dict(data)


def load(path: str) -> model.Cluster:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise SnapshotError(f"{path}: {err.strerror}") from None
    try:
        return loads(text)
    except SnapshotError as err:
        raise SnapshotError(f"{path}: {err}") from None


def plain_form(obj: Any) -> Any:
    """A model object as plain JSON-ready data (labels as an object, tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: dict(getattr(obj, f.name)) if f.name == "labels" else plain_form(getattr(obj, f.name))
                for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [plain_form(x) for x in obj]
    return obj


def to_dict(cluster: model.Cluster) -> dict:
    """Stable JSON form: the same Cluster always gives byte-identical `dumps` output."""
    out = {"version": FORMAT_VERSION}
    out.update(plain_form(cluster))
    return out


def dumps(cluster: model.Cluster) -> str:
    return json.dumps(to_dict(cluster), indent=2, sort_keys=True) + "\n"
