"""ingressmesh on a lab swarm the swarm way: `ingressmesh install --stack` (a controller on the
manager, an agent on every node as a global service, the token as a Docker secret), no host
process of ours.  The lab's nodes share one filesystem, each dockerd with its own socket and exec
root under the lab dir: the stack's paths name them with the {{.Node.Hostname}} template.
"""
from __future__ import annotations

import os
import shutil
import time

from ..stack import SECRET, StackSettings, cluster_token, deploy, ensure_secret, ensure_tls_secrets
from .mesh_endpoints import MeshEndpoints

NAME = "ingressmesh"
AGENT_SERVICE, CONTROLLER_SERVICE = f"{NAME}_agent", f"{NAME}_controller"
IMAGE = "imlab/proxy:latest"  # the lab's ingressmesh image (ingressmesh/lab/proxy_image.py)


class StackMesh(MeshEndpoints):
    def __init__(self, lab, backend: str = "nftables", on_stop: str = "handover", l7_config: str = "",
                 tls: bool = False):
        """With `l7_config` (an l7.toml's text) the L7 layer is part of the stack (ingressmesh-l7.yml);
        with `tls` agents and controllers speak https (ingressmesh-tls.yml, `install --stack --tls`)."""
        self.lab, self.backend, self.on_stop, self.l7_config, self.tls = lab, backend, on_stop, l7_config, tls
        self.dir = os.path.join(lab.config.lab_dir, "mesh")
        self.token_file = os.path.join(self.dir, "token")
        self.deployed_in = None  # seconds from `stack deploy` to every agent in sync

    def settings(self) -> StackSettings:
        node_dir = os.path.join(self.lab.config.lab_dir, "{{.Node.Hostname}}")
        assert self.lab.config.node_dir(1) == node_dir.replace("{{.Node.Hostname}}", "node1")
        l7_path = ""
        if self.l7_config:
            l7_path = os.path.join(self.dir, "l7.toml")
            with open(l7_path, "w", encoding="utf-8") as handle:
                handle.write(self.l7_config)
        return StackSettings(name=NAME, image=IMAGE, backend=self.backend, on_stop=self.on_stop,
                             docker_sock=os.path.join(node_dir, "docker.sock"),
                             exec_root=os.path.join(node_dir, "exec"), resolve_image="never",
                             l7_config=l7_path, tls_dir=os.path.join(self.dir, "tls") if self.tls else "").check()

    def docker_argv(self) -> list[str]:
        from ..lab.config import DOCKER
        return [DOCKER, "-H", f"unix://{self.lab.docker_socket(1)}"]

    def up(self, timeout: float = 90.0) -> "StackMesh":
        os.makedirs(self.dir, exist_ok=True)
        token, _ = cluster_token(self.token_file)
        ensure_secret(self.docker_argv(), token)
        settings = self.settings()
        if self.tls:
            ensure_tls_secrets(self.docker_argv(), settings)
        started = time.monotonic()
        deploy(self.docker_argv(), settings)
        self.wait_synced(timeout)
        self.deployed_in = time.monotonic() - started
        return self

    def agent_tasks(self) -> dict[str, str]:
        """node hostname -> id of the agent task that should run there now."""
        listed = self.lab.docker(1, "service", "ps", AGENT_SERVICE, "--filter", "desired-state=running",
                                 "--format", "{{.Node}} {{.ID}}", check=False, timeout=20).stdout
        return dict(line.split() for line in listed.splitlines() if len(line.split()) == 2)

    def running_containers(self, n: int) -> list[str]:
        """Containers of this stack running on node n."""
        listed = self.lab.docker(n, "ps", "-q", "--filter", f"label=com.docker.stack.namespace={NAME}",
                                 check=False, timeout=20)
        return listed.stdout.split()

    def proxy_containers(self, n: int) -> list[str]:
        """Running proxy tasks on node n (their service is the stack's when l7 deploy made it)."""
        listed = self.lab.docker(n, "ps", "-q", "--filter", "label=io.ingressmesh.l7.proxy", check=False, timeout=20)
        return listed.stdout.split()

    def remove(self, timeout: float = 60.0) -> float:
        """`docker stack rm`, then until no container of the stack runs on any node; the seconds it took."""
        started = time.monotonic()
        self.lab.docker(1, "stack", "rm", NAME, check=False, timeout=60)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if not any(self.running_containers(n) or (self.l7_config and self.proxy_containers(n))
                       for n in self.lab.config.node_numbers):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"stack {NAME} still has containers after {timeout:g} s")

    def logs(self, service: str, lines: int = 15) -> str:
        return self.lab.service_logs(f"{NAME}_{service}", tail=lines, timeout=8)  # asked again by callers that need a line

    def tails(self) -> str:
        return "".join(f"\n--- last lines of {service} ---\n{self.logs(service)}"
                       for service in ("controller", "agent") + (("l7",) if self.l7_config else ()))

    def down(self) -> None:
        try:
            self.remove()
        finally:
            self.lab.docker(1, "secret", "rm", SECRET, check=False)

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

