"""Docker and kernel helpers for the real-swarm mesh tests (every wait bounded)."""
from __future__ import annotations

import os
import socket
import statistics
import tempfile
import threading
import time

from typing import Optional

from ingressmesh.dataplane.backends import ipvs_available
from ingressmesh.ipvs.kernel import IpvsError, KernelIpvs
from ingressmesh.lab import BUSYBOX_IMAGE
from ingressmesh.netns import Netns, NetnsError
from ingressmesh.testbed.swarm_probe import kernel_map

NETWORK = "ovl"
# Inside scripts/kernel-lab (KERNEL_LAB=1: Debian's kernel under QEMU, software emulation here)
# Docker, the agents and these probes run about ten times slower: the time bounds the tests state
# are multiplied by this there (the bounds at real speed are what the host's run proves).
SLOWDOWN = 10.0 if os.environ.get("KERNEL_LAB") == "1" else 1.0
REQUEST_TIMEOUT = 2.0 * SLOWDOWN  # seconds: one request through the mesh
# The latency claims (routed within 2 s, out within 1 s) are the host's; under emulation one probe
# sweep over the three nodes alone takes seconds, so there they only bound "it happens, soon".
LATENCY_SLOWDOWN = 40.0 if SLOWDOWN > 1 else 1.0


def wait_for(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    """Poll `check()` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as err:  # noqa: BLE001 - keep polling; report the last error
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def create_service(lab, name: str, *options: str, image: str = BUSYBOX_IMAGE, command: tuple = ()) -> None:
    lab.docker(1, "service", "create", "--detach", "--no-resolve-image", "--name", name,
               "--stop-grace-period", "5s", *options, image, *command)


def remove_service(lab, name: str) -> None:
    lab.docker(1, "service", "rm", name, check=False)


def remove_service_and_wait_unrouted(lab, name: str, timeout: float = 60 * SLOWDOWN) -> None:
    """Remove a service and wait until no node's tables name it any more: its tasks drain for
    their stop grace first, and a test that snapshots the tables next must not see that tail."""
    remove_service(lab, name)
    wait_for(f"every node to drop {name}",
             lambda: not any(f'comment "{name}' in entry for n in lab.config.node_numbers
                             for entries in kernel_tables(lab, n).values() for entry in entries),
             timeout=timeout, interval=0.5)


def published_everywhere(lab, name: str, port: int):
    """Module-fixture body: 3 replicas of `name`, one per node, on the overlay, published on `port`,
    routed by every node's ingress_sbox; yields the tasks, removes the service afterwards."""
    create_service(lab, name, "--replicas", "3", "--replicas-max-per-node", "1", "--network", NETWORK,
                   "--publish", f"{port}:80")
    tasks = wait_running(lab, name, 3)
    for n in lab.config.node_numbers:
        wait_for(f"node{n} routes {name}", lambda: all(active_on_node(lab, n, t["id"]) for t in tasks), timeout=20)
    yield tasks
    remove_service(lab, name)


def running_tasks(lab, service: str, state: str = "running") -> list[dict]:
    """The service's tasks in `state` that are meant to run: id, node, container (= hostname),
    addresses.  (Swarm reports a task with a health check as "starting" until it is healthy.)"""
    client = lab.docker_client(1)
    try:
        tasks = client.api.tasks(filters={"service": service, "desired-state": "running"})
        nodes = {n["ID"]: n["Description"]["Hostname"] for n in client.api.nodes()}
    finally:
        client.close()
    found = []
    for task in tasks:
        status = task.get("Status") or {}
        if status.get("State") != state or not (status.get("ContainerStatus") or {}).get("ContainerID"):
            continue
        addresses = {a["Network"]["Spec"]["Name"]: a["Addresses"][0].split("/")[0]
                     for a in task.get("NetworksAttachments") or [] if a.get("Addresses")}
        found.append({"id": task["ID"], "node": nodes.get(task["NodeID"], task["NodeID"]),
                      "container": status["ContainerStatus"]["ContainerID"][:12], "addresses": addresses,
                      "since": status.get("Timestamp", "")})
    return found


def wait_running(lab, service: str, count: int, timeout: float = 60.0) -> list[dict]:
    return wait_for(f"{count} running tasks of {service}",
                    lambda: (lambda t: t if len(t) == count else None)(running_tasks(lab, service)), timeout, 0.2)


def node_number(task: dict) -> int:
    return int(task["node"].removeprefix("node"))


def ingress_sbox(lab, n: int) -> str:
    return f"{lab.netns_dir(n)}/ingress_sbox"


def lb_netns(lab, n: int, network_id: str) -> str:
    return f"{lab.netns_dir(n)}/lb_{network_id[:9]}"


def network_id(lab, name: str = NETWORK) -> str:
    return lab.docker(1, "network", "inspect", "-f", "{{.ID}}", name).stdout.strip()


def active_on_node(lab, n: int, task_id: str) -> bool:
    """Whether node n's ingress_sbox sends new published-port connections to the task: by
    ingressmesh's IPVS services where the ipvs backend programmed the namespace, else by the nft
    backend's map (its elements carry the task id in their comment; draining ones are not in it)."""
    ipvs = ipvs_active(ingress_sbox(lab, n))
    if ipvs is not None:
        return bool(ipvs & task_addresses(lab, task_id))
    return f' {task_id}"' in kernel_map(ingress_sbox(lab, n), "port_backends")


def ipvs_active(path: str) -> Optional[set[str]]:
    """The addresses ingressmesh's own IPVS services in a namespace send new connections to
    (weight > 0; Docker's services next to them do not count), or None where it has none (the
    nft backend's namespace, or a kernel without IPVS).  In-process netlink: under emulation a
    subprocess per look costs seconds a sweep over the nodes, which the timings would include."""
    if not ipvs_available()[0]:
        return None
    try:
        services = KernelIpvs(Netns(path)).dump()
    except (NetnsError, IpvsError):  # an lb_ namespace Docker removed (the file stays behind)
        return None
    if not services:
        return None
    return {address for service in services.values() for (address, _), weight in service.dests.items() if weight > 0}


def task_addresses(lab, task_id: str) -> set[str]:
    """The task's addresses on every network it is attached to (none once Swarm forgot it)."""
    import docker
    client = lab.docker_client(1)
    try:
        task = client.api.inspect_task(task_id)
    except docker.errors.NotFound:
        return set()
    finally:
        client.close()
    return {a.split("/")[0] for attachment in task.get("NetworksAttachments") or []
            for a in attachment.get("Addresses") or []}


def lb_namespaces(lab, n: int) -> list[str]:
    directory = lab.netns_dir(n)
    return [f"{directory}/{name}" for name in sorted(os.listdir(directory)) if name.startswith("lb_")]


def routed_on_node(lab, n: int, task_id: str) -> bool:
    """Whether node n sends new connections to the task by any path: a published port in
    ingress_sbox or a VIP in any of its lb_<network> namespaces (ingressmesh's IPVS services where
    the ipvs backend programmed the node, else the nft maps)."""
    found = [ipvs_active(ns) for ns in [ingress_sbox(lab, n)] + lb_namespaces(lab, n)]
    if any(addresses is not None for addresses in found):
        return bool(set().union(*(a for a in found if a)) & task_addresses(lab, task_id))
    return active_on_node(lab, n, task_id) or any(
        f' {task_id}"' in kernel_map(ns, "vip_backends") for ns in lb_namespaces(lab, n))


def kernel_tables(lab, n: int) -> dict[str, list[str]]:
    """Node n's programmed entries (every map/set element; they carry a comment) in ingress_sbox
    and every lb_*.  Chains are left out: a restarted agent's atomic rebuild drops unused
    `pick_*` chains, which changes nothing a packet sees."""
    import subprocess
    found = {}
    for ns in [ingress_sbox(lab, n)] + lb_namespaces(lab, n):
        done = subprocess.run(["nsenter", f"--net={ns}", "nft", "list", "table", "ip", "ingressmesh"],
                              capture_output=True, text=True, timeout=10)
        entries = [line.strip().removeprefix("elements = {").strip().rstrip(",}").strip()
                   for line in done.stdout.splitlines() if 'comment "' in line]
        found[os.path.basename(ns)] = sorted(entries)
    return found


def port_entries(lab, n: int) -> str:
    return kernel_map(ingress_sbox(lab, n), "port_services")


def summary(values: list[float]) -> str:
    return (f"n={len(values)} p50={statistics.median(values) * 1000:.0f} ms "
            f"max={max(values) * 1000:.0f} ms")


class NotifySocket:
    """A systemd-style NOTIFY_SOCKET: collects the datagrams a daemon sends (READY=1, WATCHDOG=1)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="imnotify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def env(self, watchdog_seconds: float = 2.0) -> dict:
        return {"NOTIFY_SOCKET": self.path, "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))}

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self) -> list[str]:
        return [line for _, line in self.messages]

    def close(self):
        self._stop.set()
        self.thread.join(2)
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)
