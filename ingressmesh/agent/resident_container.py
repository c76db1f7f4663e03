"""The plain container that carries a drained node's agent (drained.py says when and why).

It is made from the stack agent's own container, so it runs the very same image (by id), command,
capabilities, mounts (Docker's socket, Docker's exec root with its netns/, the per-node lease volume) and
host networking, with three changes:

- `--on-stop keep`: it is stopped by the agent task that replaces it (which is waiting for the
  rules) or by dockerd going down; neither may remove the rules;
- the files Swarm mounted into the task (its secrets under /run/secrets) do not exist for a
  plain container: the node's own credential (never the cluster secret) and the CA are copied
  into it before it starts, 0400, and the flags point there;
- what makes an agent task a task (`--drained-resident`, `--task-id` and their variables) is
  left out: a resident never starts or retires residents.

`RestartPolicy: always`: drained nodes are rebooted for maintenance; the resident comes back with
dockerd and programs the node again.
"""
from __future__ import annotations

import io
import logging
import tarfile
import time
from typing import Iterable, Optional

log = logging.getLogger(__name__)
RESIDENT_LABEL = "io.ingressmesh.resident"
STACK_LABEL = "com.docker.stack.namespace"
TASK_LABEL = "com.docker.swarm.task.id"
TOKEN_PATH = "/etc/ingressmesh/token"
CA_PATH = "/etc/ingressmesh/ca.pem"
TASK_ONLY = ("--drained-resident", "--task-id")
TASK_ONLY_ENV = ("INGRESSMESH_DRAINED_RESIDENT", "INGRESSMESH_TASK_ID")
# What a resident keeps of the task's HostConfig: how it reaches the node, nothing about Swarm.
HOST_CONFIG_KEPT = ("NetworkMode", "CapAdd", "CapDrop", "Mounts", "SecurityOpt", "Init", "Devices")
STOP_TIMEOUT = 25  # seconds a retired resident gets to leave (its own work takes ~1-2 s)


class ResidentError(RuntimeError):
    """A resident could not be made or retired; the message says which step and why."""


def rewrite_argv(argv: Iterable[str], replace: dict[str, str], drop: Iterable[str] = ()) -> list[str]:
    """`argv` with each `--flag value` / `--flag=value` of `replace` set to its new value (added
    at the end when absent) and every flag in `drop` (all take a value) left out."""
    argv, out, done, drop = list(argv), [], set(), set(drop)
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, has_value, _ = arg.partition("=")
        if flag in replace or flag in drop:
            i += 1 if has_value else 2
            if flag in replace and flag not in done:
                out += [flag, replace[flag]]
                done.add(flag)
            continue
        out.append(arg)
        i += 1
    for flag, value in replace.items():
        if flag not in done:
            out += [flag, value]
    return out


def flag_value(argv: Iterable[str], flag: str) -> Optional[str]:
    """The value of `flag` in `argv` (the last one given), or None."""
    argv, found = list(argv), None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg[len(flag) + 1:]
    return found


def resident_spec(own: dict, name: str, ca: bool) -> dict:
    """The Engine API body creating the resident, from `own` (the agent task's container inspect)."""
    config, host = own.get("Config") or {}, own.get("HostConfig") or {}
    replace = {"--on-stop": "keep", "--token-file": TOKEN_PATH, **({"--ca": CA_PATH} if ca else {})}
    labels = {RESIDENT_LABEL: name}
    if (config.get("Labels") or {}).get(STACK_LABEL):
        labels[STACK_LABEL] = config["Labels"][STACK_LABEL]  # `docker ps --filter label=…` shows it with the stack
    return {
        "Image": own["Image"],  # the image id: the same code as the task, whatever the tag points at now
        # Entrypoint and command as one argv (the stack's `command` is the container's Cmd, but an
        # image or a by-hand service may put the agent in either): rewritten, it is the entrypoint.
        "Entrypoint": rewrite_argv((config.get("Entrypoint") or []) + (config.get("Cmd") or []), replace, TASK_ONLY),
        "Cmd": [],
        # Not the task's, and not one naming a file Swarm mounted (a secret: not there for a plain container).
        "Env": [e for e in config.get("Env") or [] if e.split("=", 1)[0] not in TASK_ONLY_ENV
                and not e.partition("=")[2].startswith("/run/secrets/")],
        "Hostname": config.get("Hostname", ""),
        "Labels": labels,
        "HostConfig": {**{k: host[k] for k in HOST_CONFIG_KEPT if host.get(k) is not None},
                       "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}},
    }


def files_archive(files: dict[str, bytes]) -> bytes:
    """A tar of `files` (absolute path -> content), 0400 root, with their directories (0700)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dirs = sorted({p.rsplit("/", 1)[0].lstrip("/") for p in files} - {""})
        for directory in dirs:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
            tar.addfile(info)
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o400, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def own_container(api, task_id: str) -> dict:
    """The inspect of the container running swarm task `task_id` on this node."""
    found = api.containers(filters={"label": f"{TASK_LABEL}={task_id}"})
    if len(found) != 1:
        raise ResidentError(f"task {task_id}: {len(found)} running containers carry it on this node, not 1")
    return api.inspect_container(found[0]["Id"])


def start_resident(api, own: dict, name: str, files: dict[str, bytes]) -> str:
    """Create and start the resident `name` (a leftover of that name is removed first); its id."""
    import docker.errors
    try:
        try:
            api.remove_container(name, force=True)
            log.info("removed a leftover container %s", name)
        except docker.errors.NotFound:
            pass
        made = api.create_container_from_config(resident_spec(own, name, CA_PATH in files), name=name)
        api.put_archive(made["Id"], "/", files_archive(files))
        api.start(made["Id"])
    except docker.errors.APIError as err:
        raise ResidentError(f"resident container {name}: {err.explanation or err}") from None
    return made["Id"]


def retire_residents(api, name: str) -> list[str]:
    """Stop and remove every resident `name` on this node; the ids retired.  The restart policy
    goes first (a container with `always` that exits is started again), then a plain stop: the
    resident's SIGTERM leaves the rules (`--on-stop keep`) for the agent task that retires it."""
    import docker.errors
    retired = []
    for found in api.containers(all=True, filters={"label": f"{RESIDENT_LABEL}={name}"}):
        cid = found["Id"]
        try:
            api.update_container(cid, restart_policy={"Name": "no"})
            api.stop(cid, timeout=STOP_TIMEOUT)
            api.remove_container(cid)
        except docker.errors.NotFound:
            pass  # gone meanwhile
        except docker.errors.APIError as err:
            raise ResidentError(f"retiring resident container {cid[:12]}: {err.explanation or err}") from None
        retired.append(cid)
    return retired
