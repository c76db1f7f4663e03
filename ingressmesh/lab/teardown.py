"""`lab down`: stop every lab process and remove what the lab created, also after a crash.

Processes are found by recorded PID (+ start time), by network namespace, by cgroup and by
lab mounts (only the dockerds' private mount namespaces and their children have those),
never by name. What is found is SIGKILLed after a short SIGTERM of the dockerds; the data is
thrown away, so a graceful shutdown buys nothing but time."""
from __future__ import annotations

import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from . import fabric, procs
from .config import LabConfig
from .dockerd import RUN_DIRS
from .state import LabState


def lab_pids(config: LabConfig, state: LabState) -> set[int]:
    """Every live process that belongs to the lab, however it is found."""
    found = {rec["pid"] for rec in state.dockerds.values() if procs.alive(rec["pid"], rec["start"])}
    names = set(state.data.get("netns", [])) | set(fabric.existing(config))
    found |= procs.pids_in_netns(fabric.netns_path(name) for name in names)
    found |= procs.pids_in_cgroups(procs.cgroup_dirs(config.cgroup_pattern()))
    found |= procs.pids_with_mounts_under(config.lab_dir)
    return {pid for pid in found if procs.alive(pid)} - {os.getpid()}


def _stop_processes(config: LabConfig, state: LabState, grace: float) -> None:
    dockerds = {rec["pid"]: rec["start"] for rec in state.dockerds.values()
                if procs.alive(rec["pid"], rec["start"])}
    if dockerds and grace > 0:
        procs.kill(dockerds, signal.SIGTERM)
        time.sleep(min(0.2, grace))
        # Containers: swarm's StopGracePeriod (10 s) would outlast any wait here.
        procs.kill(procs.pids_in_cgroups(procs.cgroup_dirs(config.cgroup_pattern())))
        procs.wait_gone(dockerds, grace)
    for _round in range(20):
        victims = lab_pids(config, state)
        if not victims:
            return
        procs.kill(victims)
        procs.wait_gone({pid: procs.start_time(pid) for pid in victims}, 1.0)
    raise RuntimeError(f"lab processes survive SIGKILL: {sorted(lab_pids(config, state))}")


def _remove_cgroups(config: LabConfig) -> list[str]:
    """rmdir the lab's cgroup trees bottom-up (retried: a cgroup is busy until its last task
    is reaped); returns those that remain."""
    left: list[str] = []
    for _round in range(40):
        left = []
        for top in procs.cgroup_dirs(config.cgroup_pattern()):
            for root, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
                try:
                    os.rmdir(root)
                except OSError:
                    left.append(root)
        if not left:
            return []
        time.sleep(0.05)
    return left


def _remove_run_dirs(state: LabState) -> list[str]:
    """The /run/docker and /run/containerd this lab created, if empty and nobody (another
    lab, a system dockerd) has them mounted anywhere."""
    kept = []
    created = [d for d in state.data.get("run_dirs_created", []) if d in RUN_DIRS]
    in_use = procs.mounts_on(created) if created else set()
    for path in created:
        if not os.path.isdir(path):
            continue
        if in_use or os.listdir(path):
            kept.append(path)
            continue
        os.rmdir(path)
    return kept


def _remove_files(config: LabConfig) -> None:
    """Only what the lab writes: node dirs, the state file, the node script."""
    try:
        names = os.listdir(config.lab_dir)
    except OSError:
        return
    trees = []
    for name in names:
        path = os.path.join(config.lab_dir, name)
        if name.startswith("node") and os.path.isdir(path) and not os.path.islink(path):
            trees.append(path)
        elif name.startswith(("state.json", "node-dockerd.sh")):
            os.unlink(path)
    # Image layers are thousands of files per node: unlink the nodes' trees side by side.
    with ThreadPoolExecutor(max_workers=max(1, len(trees))) as pool:
        list(pool.map(shutil.rmtree, trees))
    # The lab dir, and its parent when that is an empty .../ingressmesh made for it.
    for path in (config.lab_dir, os.path.dirname(config.lab_dir)):
        if path == config.lab_dir or os.path.basename(path) == "ingressmesh":
            try:
                os.rmdir(path)
            except OSError:
                break


def down(config: LabConfig, grace: float = 1.0) -> dict:
    """Tear the lab down; returns {"seconds": ..., "kept": [...]} (kept: what could not go)."""
    started = time.monotonic()
    state = LabState.load(config.state_file)
    _stop_processes(config, state, grace)
    names = sorted(set(state.data.get("netns", [])) | set(fabric.existing(config)))
    kept = fabric.delete(names)
    kept += _remove_cgroups(config)
    if procs.pids_with_mounts_under(config.lab_dir):
        kept.append(f"lab mounts still visible in some process: keeping {config.lab_dir}")
    else:
        _remove_files(config)
        kept += _remove_run_dirs(state)
    return {"seconds": time.monotonic() - started, "kept": kept}


def leftovers(config: LabConfig) -> list[str]:
    """Anything of this lab still present (empty after a clean down)."""
    found = [f"netns {name}" for name in fabric.existing(config)]
    found += [f"cgroup {path}" for path in procs.cgroup_dirs(config.cgroup_pattern())]
    state = LabState.load(config.state_file)
    found += [f"process {pid}" for pid in sorted(lab_pids(config, state))]
    if os.path.lexists(config.lab_dir):
        found += [f"file {os.path.join(config.lab_dir, n)}" for n in os.listdir(config.lab_dir)
                  if os.path.join(config.lab_dir, n) != config.image_cache] or [config.lab_dir]
    return found
