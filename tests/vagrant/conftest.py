"""The Vagrant VM lab (vagrant/README.md) as the tests see it: commands run as root on a node
through `scripts/vagrant-lab ssh NODE CMD`, which connects from inside the lab's own network
namespace. The tests never bring the lab up themselves: `sudo make vagrant-test` does, then runs
them with IMVAG_REQUIRE_LAB=1 (a lab that does not answer is then a failure, not a skip)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "scripts" / "vagrant-lab"
NODES = [f"node{i}" for i in range(1, int(os.environ.get("IMVAG_NODES", "3")) + 1)]
MANAGER = "node1"
SUBNET = "192.168.57"
CONTROLLER = f"http://{SUBNET}.11:9401"


def node_ip(node: str) -> str:
    return f"{SUBNET}.{10 + int(node[4:])}"


class LabError(AssertionError):
    pass


@dataclass
class VagrantLab:
    nodes: list

    def run(self, node: str, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """`command` run by root's bash on `node`."""
        proc = subprocess.run([str(LAB), "ssh", node, command], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise LabError(f"{node}: `{command}` exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return proc

    def out(self, node: str, command: str, timeout: float = 120) -> str:
        return self.run(node, command, timeout=timeout).stdout

    def json(self, node: str, command: str, timeout: float = 120):
        return json.loads(self.out(node, command, timeout=timeout))

    def unit(self, node: str, unit: str) -> dict:
        text = self.out(node, f"systemctl show -p ActiveState,SubState,NRestarts,Type,MainPID,WatchdogUSec {unit}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def wait(self, what: str, probe, timeout: float, interval: float = 2.0):
        """probe() until it returns something true, at most `timeout` s (and so a bounded count)."""
        deadline = time.monotonic() + timeout
        last = None
        for _ in range(int(timeout / interval) + 1):
            try:
                last = probe()
            except (LabError, subprocess.TimeoutExpired, ValueError) as err:
                last = err
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                break
            time.sleep(interval)
        raise LabError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def lab() -> VagrantLab:
    if os.geteuid() != 0:
        pytest.skip("the VM lab needs root (sudo make vagrant-test)")
    try:
        proc = subprocess.run([str(LAB), "ssh", MANAGER, "true"], capture_output=True, text=True, timeout=60)
        ok = proc.returncode == 0
        why = proc.stderr.strip()[-500:]
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, why = False, str(err)
    if not ok:
        if os.environ.get("IMVAG_REQUIRE_LAB") == "1":
            pytest.fail(f"the VM lab does not answer ({why}): sudo scripts/vagrant-lab up")
        pytest.skip("the VM lab is not up (sudo make vagrant-test brings it up)")
    return VagrantLab(NODES)


DEMO_SERVICE = "imvag-web"
DEMO_NETWORK = "imvag-demo"
DEMO_PORT = 8080
DEMO_IMAGE = "imlab/busybox:latest"  # imported offline at provisioning (scripts/vagrant-lab images)


@pytest.fixture(scope="session")
def demo(lab: VagrantLab) -> str:
    """A VIP service with a published port and one task per node (kept between runs: creating
    tasks under software emulation takes a while)."""
    replicas = len(lab.nodes)
    lab.run(MANAGER, f"docker network inspect {DEMO_NETWORK} >/dev/null 2>&1 || "
                     f"docker network create -d overlay --attachable {DEMO_NETWORK} >/dev/null")
    lab.run(MANAGER, f"docker service inspect {DEMO_SERVICE} >/dev/null 2>&1 || "
                     f"docker service create -d -q --name {DEMO_SERVICE} --network {DEMO_NETWORK} "
                     f"--replicas {replicas} --replicas-max-per-node 1 --publish {DEMO_PORT}:80 {DEMO_IMAGE}",
            timeout=180)
    lab.wait(f"{DEMO_SERVICE} {replicas}/{replicas}",
             lambda: lab.out(MANAGER, f"docker service ls -f name={DEMO_SERVICE} --format '{{{{.Replicas}}}}'")
             .strip().startswith(f"{replicas}/{replicas}"), timeout=600, interval=5)
    return DEMO_SERVICE
