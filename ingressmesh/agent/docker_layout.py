"""Where Docker keeps a node's namespaces, as the agent sees them.

dockerd bind-mounts `ingress_sbox` and `lb_<network id[:9]>` under `<exec-root>/netns`.  On a
normal host the agent shares dockerd's mount namespace and reads them there; when dockerd runs
in a private mount namespace (the lab, some packagings) the files are only reachable through
`/proc/<dockerd pid>/root/...`, so with a pidfile the path is recomputed on every apply: a
restarted dockerd has a new pid.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..dataplane.layout import Layout


@dataclass(frozen=True)
class DockerNamespaces:
    exec_root: str = "/run/docker"
    pidfile: str = ""  # set when dockerd lives in its own mount namespace

    def netns_dir(self) -> str:
        directory = os.path.join(self.exec_root, "netns")
        if not self.pidfile:
            return directory
        with open(self.pidfile, encoding="ascii") as handle:
            pid = int(handle.read().strip())
        return f"/proc/{pid}/root{directory}"

    def layout(self) -> Layout:
        directory = self.netns_dir()
        return Layout(host="", ingress=f"{directory}/ingress_sbox", lb=f"{directory}/lb_{{network_id:.9}}")
