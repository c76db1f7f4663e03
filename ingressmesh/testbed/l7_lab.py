"""The L7 proxy services on a lab swarm: an Interlock-style config and `ingressmesh l7 deploy
--watch` on node1 (where a manager would run it), kept by SwarmMesh like the other daemons."""
from __future__ import annotations

import os

from ..lab import PROXY_IMAGE


def extension(name: str, controller_url: str, port: int, replicas: int = 2, mode: str = "ingress",
              cluster: str = "", ssl_port: int = 0, proxy_secrets: tuple[str, ...] = (), source_ip: str = "",
              routing_network: str = "") -> str:
    """One proxy service; with controller_url "" the proxies follow the controllers `l7 deploy`
    found on the swarm's managers (the swarm stack)."""
    lines = [f"[Extensions.{name}]", f'ProxyImage = "{PROXY_IMAGE}"', f"ProxyReplicas = {replicas}",
             f'PublishMode = "{mode}"', f"PublishedPort = {port}", 'ProxyUpdateDelay = "0s"',
             'ProxyStopGracePeriod = "20s"']
    if controller_url:
        lines.append(f'Controllers = ["{controller_url}"]')
    if cluster:
        lines.append(f'ServiceCluster = "{cluster}"')
    if ssl_port:
        lines.append(f"PublishedSSLPort = {ssl_port}")
    if source_ip:  # the proxy service's io.ingressmesh.lb.source_ip (issue 21)
        lines.append(f'SourceIP = "{source_ip}"')
    if routing_network:  # the proxies stay on it: services coming and going there never roll them
        lines.append(f'RoutingNetwork = "{routing_network}"')
    if proxy_secrets:  # the secrets labels may mount into the proxies (l7/secret_policy.py)
        lines.append("ProxySecrets = [" + ", ".join(f'"{p}"' for p in proxy_secrets) + "]")
    return "\n".join(lines) + "\n"


def deploy(mesh, config_text: str, name: str = "l7", port: int = 0) -> str:
    """Writes the config into the mesh dir and starts `l7 deploy --watch` on node1 (as `name`,
    its /healthz on `port`, DEPLOY_PORT by default); the config's path."""
    path = os.path.join(mesh.dir, f"{name}.toml")
    os.makedirs(mesh.dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(config_text)
    mesh.start_daemon(name, 1, ["l7", "deploy", "--config", path, "--docker",
                                f"unix://{mesh.lab.config.docker_sock(1)}", "--token-file", mesh.token_file,
                                "--controller", mesh.controller_url, "--watch", "--listen",
                                f"0.0.0.0:{port or DEPLOY_PORT}"])
    return path


DEPLOY_PORT = 9404  # `l7 deploy --listen` (as in the swarm stack)


def deploy_health(mesh) -> tuple[int, dict]:
    """`l7 deploy --watch`'s /healthz (status, JSON): each proxy service, the stuck updates."""
    return mesh.get(f"http://{mesh.lab.node_address(1)}:{DEPLOY_PORT}/healthz")
