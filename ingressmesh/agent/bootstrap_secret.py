"""An agent started with the cluster secret keeps only its own node's credential.

Swarm cannot give each task of a global service its own secret, so the stack hands every agent
task the cluster secret.  At start the agent derives its node's credential from it
(daemon/credentials.py: `node:<id>:<HMAC>`, which the controllers check with the secret alone),
uses only that one from then on (its reports can speak for its own node only, as the controllers
enforce), and forgets the secret.  In a container it also covers the secret's file with
/dev/null in its own mount namespace, so what runs in the container later (`docker exec`, a bug
that reads a file) no longer finds the secret there.  The resident agent of a drained node
(drained.py) is given the node credential only.

What it cannot do: the task's secret stays on the node's disk-less tmpfs that dockerd mounted
for it (/var/lib/docker/containers/<id>/mounts/secrets) while the task runs, and the agent holds
the Docker socket, so whoever takes over the agent process can still reach the secret through
the host.  This narrows what a read-only leak gives away, not what root on the node can do.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Callable, Optional

from ..daemon.credentials import is_derived, node_credential

log = logging.getLogger(__name__)
SECRETS_DIR = "/run/secrets"
MOUNTINFO = "/proc/self/mountinfo"


def node_scoped(token: str, node_id: str) -> tuple[str, bool]:
    """(the credential to use, whether it was derived here from the cluster secret)."""
    if is_derived(token):
        return token, False
    return node_credential(token, node_id), True


def is_docker_secret(path: str, mountinfo: str) -> bool:
    """Whether `path` is a Docker secret in a container: under /run/secrets, and mounted there
    (dockerd bind-mounts each secret file from its tmpfs; a directory mount counts too), never a
    host file."""
    if not path.startswith(SECRETS_DIR + "/"):
        return False
    return any(len(fields) > 4 and fields[4] in (path, SECRETS_DIR) for fields in map(str.split, mountinfo.splitlines()))


def hide_secret_file(path: str, mountinfo_path: str = MOUNTINFO, run: Callable = subprocess.run) -> Optional[str]:
    """Cover the Docker secret `path` with /dev/null in this container's mount namespace; None
    when done, else why not (a host file, or mount refused)."""
    try:
        with open(mountinfo_path, encoding="utf-8") as handle:
            if not is_docker_secret(path, handle.read()):
                return f"{path} is not a Docker secret in a container: left as it is"
    except OSError as err:
        return f"cannot read {mountinfo_path}: {err.strerror}"
    done = run(["mount", "--bind", "/dev/null", path], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        return f"cannot cover {path} ({done.stderr.strip()}): the cluster secret stays readable in this container"
    log.info("derived this node's credential from the cluster secret and covered %s in this container", path)
    return None
