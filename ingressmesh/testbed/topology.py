"""Build and tear down the conformance topology in network namespaces.

    ext client ──┐ underlay bridge 10.99.0.0/24 (in the fabric namespace)
                 ├── node i host ns (10.99.0.1i) ──veth "gwbridge" 172.18.0.1/.2── node i ingress ns
                 │                                                                 │
    ingress overlay bridge 10.255.0.0/16 ── node i ingress ns (10.255.0.(1+i)), every task
    app overlay bridge 10.0.1.0/24 ──────── node i lb ns (10.0.1.(250+i)), every task, client i

The overlays are plain bridges in one fabric namespace: a shared L2 segment per network, like
VXLAN gives Swarm.  Client i routes the VIP block via node i's load-balancer namespace, as a
container on node i would use its node's load balancer.  Every namespace name starts with the
testbed's prefix, and `down()` removes exactly what `up()` made, by PID and by name.
"""
from __future__ import annotations

import os
import secrets
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field

VIP_BLOCK = "10.0.1.0/29"  # VIPs live here (.2, .3 ...); tasks start at .10
TCP_PORT = 80
UDP_PORT = 90
# Python's start under emulation on a starved host (kernel-lab beside the swarm lab in CI) took
# over 20 s for one echo server; it prints "ready" at once when it can.
ECHO_START_SECONDS = 120


@dataclass(frozen=True)
class TaskSpec:
    name: str
    node: int  # 1-based node number
    index: int  # address suffix offset: task addresses end in 10 + index


class TestbedError(RuntimeError):
    """A step of building the testbed failed; the message names the command."""


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    nodes: int = 2
    tasks: tuple = (TaskSpec("t1", 1, 1), TaskSpec("t2", 2, 2), TaskSpec("t3", 2, 3), TaskSpec("t4", 1, 4))
    prefix: str = field(default_factory=lambda: "imc" + secrets.token_hex(2))
    namespaces: list = field(default_factory=list)
    processes: list = field(default_factory=list)

    # --- names and addresses -------------------------------------------------------------
    def node_ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}"

    def ingress_ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}i"

    def lb_ns(self, i: int) -> str:
        return f"{self.prefix}-n{i}lb"

    def task_ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def client_ns(self, i: int) -> str:
        return f"{self.prefix}-c{i}"

    @property
    def ext_ns(self) -> str:
        return f"{self.prefix}-ext"

    @property
    def fabric_ns(self) -> str:
        return f"{self.prefix}-fab"

    @staticmethod
    def node_address(i: int) -> str:
        return f"10.99.0.{10 + i}"

    @staticmethod
    def ingress_address(i: int) -> str:
        return f"10.255.0.{1 + i}"

    @staticmethod
    def lb_address(i: int) -> str:
        return f"10.0.1.{250 + i}"

    @staticmethod
    def client_address(i: int) -> str:
        return f"10.0.1.{100 + i}"

    @staticmethod
    def task_addresses(task: TaskSpec) -> tuple[str, str]:
        """(ingress network address, app network address)."""
        return f"10.255.0.{10 + task.index}", f"10.0.1.{10 + task.index}"

    # --- building ------------------------------------------------------------------------
    def _ip(self, *argv: str) -> None:
        proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise TestbedError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")

    def _netns(self, name: str) -> str:
        self._ip("netns", "add", name)
        self.namespaces.append(name)
        self._ip("-n", name, "link", "set", "lo", "up")
        return name

    def _veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        self._ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        self._ip("-n", ns_a, "link", "set", if_a, "up")
        self._ip("-n", ns_b, "link", "set", if_b, "up")

    def _attach(self, ns: str, ifname: str, bridge: str, port: str, address: str) -> None:
        """Plug `ns` into a fabric bridge with `address` on its end of the cable."""
        self._veth(ns, ifname, self.fabric_ns, port)
        self._ip("-n", self.fabric_ns, "link", "set", port, "master", bridge)
        self._ip("-n", ns, "addr", "add", address, "dev", ifname)

    def _sysctl(self, ns: str, key: str, value: str) -> None:
        proc = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise TestbedError(f"sysctl {key} in {ns}: {proc.stderr.strip()}")

    def up(self) -> "Testbed":
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        fab = self._netns(self.fabric_ns)
        for bridge in ("ul", "ingr", "app"):
            self._ip("-n", fab, "link", "add", bridge, "type", "bridge")
            self._ip("-n", fab, "link", "set", bridge, "up")
        for i in range(1, self.nodes + 1):
            host, ingress, lb = self._netns(self.node_ns(i)), self._netns(self.ingress_ns(i)), self._netns(self.lb_ns(i))
            self._attach(host, "eth0", "ul", f"u-n{i}", f"{self.node_address(i)}/24")
            self._veth(host, "gwbridge", ingress, "eth1")
            self._ip("-n", host, "addr", "add", "172.18.0.1/16", "dev", "gwbridge")
            self._ip("-n", ingress, "addr", "add", "172.18.0.2/16", "dev", "eth1")
            self._ip("-n", ingress, "route", "add", "default", "via", "172.18.0.1")
            self._attach(ingress, "eth0", "ingr", f"i-n{i}", f"{self.ingress_address(i)}/16")
            self._attach(lb, "eth0", "app", f"a-lb{i}", f"{self.lb_address(i)}/24")
            # The LB namespace answers on the interface it received on: no redirects.
            self._sysctl(lb, "net.ipv4.conf.all.send_redirects", "0")
            self._sysctl(lb, "net.ipv4.conf.eth0.send_redirects", "0")
            client = self._netns(self.client_ns(i))
            self._attach(client, "eth0", "app", f"a-c{i}", f"{self.client_address(i)}/24")
            self._ip("-n", client, "route", "add", VIP_BLOCK, "via", self.lb_address(i))
        ext = self._netns(self.ext_ns)
        self._attach(ext, "eth0", "ul", "u-ext", "10.99.0.100/24")
        for task in self.tasks:
            ns = self._netns(self.task_ns(task.name))
            ingress_addr, app_addr = self.task_addresses(task)
            self._attach(ns, "eth0", "ingr", f"i-{task.name}", f"{ingress_addr}/16")
            self._attach(ns, "eth1", "app", f"a-{task.name}", f"{app_addr}/24")
            self._start_echo(ns, task.name)

    def _start_echo(self, ns: str, name: str) -> None:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "ingressmesh.testbed.echo",
                "--name", name, "--tcp", str(TCP_PORT), "--udp", str(UDP_PORT)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")])))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.processes.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], ECHO_START_SECONDS)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            raise TestbedError(f"echo server in {ns} did not start within {ECHO_START_SECONDS} s: {line!r} "
                               f"{proc.stderr.read() if proc.poll() is not None else ''}")

    # --- teardown ------------------------------------------------------------------------
    def down(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.processes.clear()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self.namespaces.clear()

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
