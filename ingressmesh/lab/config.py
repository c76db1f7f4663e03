"""Lab settings and every name derived from them, so up, down and status agree on names."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

DOCKERD = "/usr/sbin/dockerd"  # Debian docker.io 20.10; /usr/local/bin/docker is another client
DOCKER = "/usr/bin/docker"
# The Engine API of the lab's dockerd (Debian's 20.10, DOCKERD); newer daemons accept it down to
# their own minimum API version.
LAB_API_VERSION = "1.41"
IMAGE_CACHE = "/var/cache/ingressmesh/lab-images"


@dataclass(frozen=True)
class LabConfig:
    """One lab: node count, names and addresses. Two labs with different prefix, lab_dir,
    subnet and pool can run side by side."""
    lab_dir: str = "/var/lib/ingressmesh/lab"
    nodes: int = 3
    managers: int = 1
    prefix: str = "imlab"                 # netns imlab-node1.., imlab-br, imlab-client; cgroups
    subnet: str = "10.77.0"               # node N is SUBNET.N/24, the client SUBNET.100
    pool: str = "10.200.0.0/16"           # swarm --default-addr-pool
    image_cache: str = IMAGE_CACHE
    images: tuple = ("busybox", "python", "proxy")  # which lab images `up` imports (images.py)
    client_host: int = 100
    ready_timeout: float = 60.0           # dockerd answering, swarm formed (longer under emulation)
    import_timeout: float = 300.0         # one `docker import` of a lab image into one node
    # (node, subnet): that node's docker_gwbridge made with this subnet before it joins, as an
    # operator avoiding 172.18/16 does; its ingress_sbox then has no 172.18.0.2 address.
    gwbridges: tuple = ()

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 50:
            raise ValueError(f"nodes must be 1..50, not {self.nodes}")
        if not 1 <= self.managers <= self.nodes:
            raise ValueError(f"managers must be 1..{self.nodes}, not {self.managers}")
        if not re.fullmatch(r"[a-z][a-z0-9]{1,11}", self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: 2-12 lowercase letters/digits")
        if not os.path.isabs(self.lab_dir) or os.path.normpath(self.lab_dir) == "/":
            raise ValueError(f"lab_dir must be an absolute directory below /, not {self.lab_dir!r}")
        if not 1 <= self.ready_timeout <= 3600:
            raise ValueError(f"ready_timeout must be 1..3600 seconds, not {self.ready_timeout}")
        if not 1 <= self.import_timeout <= 3600:
            raise ValueError(f"import_timeout must be 1..3600 seconds, not {self.import_timeout}")
        for n, subnet in self.gwbridges:
            if n not in self.node_numbers or not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", subnet):
                raise ValueError(f"gwbridges: ({n!r}, {subnet!r}) is not (node 1..{self.nodes}, IPv4 subnet)")
        unknown = set(self.images) - {"busybox", "python", "proxy"}
        if unknown:
            raise ValueError(f"unknown lab images {sorted(unknown)}: busybox, python, proxy")

    @property
    def node_numbers(self) -> range:
        return range(1, self.nodes + 1)

    def is_manager(self, n: int) -> bool:
        return n <= self.managers

    def node_name(self, n: int) -> str:
        return f"node{n}"

    def node_netns_name(self, n: int) -> str:
        return f"{self.prefix}-node{n}"

    @property
    def bridge_netns_name(self) -> str:
        return f"{self.prefix}-br"

    @property
    def client_netns_name(self) -> str:
        return f"{self.prefix}-client"

    def netns_pattern(self) -> re.Pattern:
        """Every netns name this prefix may have created (for a down without state)."""
        return re.compile(rf"{re.escape(self.prefix)}-(node\d+|br|client)")

    def cgroup_name(self, n: int) -> str:
        return f"{self.prefix}-node{n}"

    def cgroup_pattern(self) -> re.Pattern:
        return re.compile(rf"{re.escape(self.prefix)}-node\d+")

    def node_address(self, n: int) -> str:
        return f"{self.subnet}.{n}"

    @property
    def client_address(self) -> str:
        return f"{self.subnet}.{self.client_host}"

    def node_dir(self, n: int) -> str:
        return os.path.join(self.lab_dir, f"node{n}")

    def docker_sock(self, n: int) -> str:
        return os.path.join(self.node_dir(n), "docker.sock")

    def exec_root(self, n: int) -> str:
        return os.path.join(self.node_dir(n), "exec")

    def data_root(self, n: int) -> str:
        return os.path.join(self.node_dir(n), "data")

    def pidfile(self, n: int) -> str:
        return os.path.join(self.node_dir(n), "docker.pid")

    def dockerd_log(self, n: int) -> str:
        return os.path.join(self.node_dir(n), "dockerd.log")

    @property
    def state_file(self) -> str:
        return os.path.join(self.lab_dir, "state.json")

    @property
    def node_script(self) -> str:
        return os.path.join(self.lab_dir, "node-dockerd.sh")
