"""Forming the swarm: init on node1, managers join one at a time (raft), workers in parallel,
then wait until the manager lists every node Ready."""
from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor


class SwarmError(RuntimeError):
    """The swarm did not form."""


def form(lab, timeout: float = 60.0) -> None:
    cfg = lab.config
    lab.docker(1, "swarm", "init", "--advertise-addr", cfg.node_address(1),
               "--listen-addr", f"{cfg.node_address(1)}:2377", "--default-addr-pool", cfg.pool,
               timeout=timeout)
    tokens = {role: lab.docker(1, "swarm", "join-token", "-q", role).stdout.strip()
              for role in ("manager", "worker")}

    def join(n: int) -> None:
        role = "manager" if cfg.is_manager(n) else "worker"
        lab.docker(n, "swarm", "join", "--advertise-addr", cfg.node_address(n),
                   "--listen-addr", f"{cfg.node_address(n)}:2377", "--token", tokens[role],
                   f"{cfg.node_address(1)}:2377", timeout=timeout)

    for n in cfg.node_numbers[1:]:
        if cfg.is_manager(n):
            join(n)
    workers = [n for n in cfg.node_numbers if not cfg.is_manager(n)]
    if workers:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            list(pool.map(join, workers))  # re-raises the first failure
    wait_ready(lab, timeout)


def node_rows(lab, n: int = 1) -> list[dict]:
    """`docker node ls` of manager n as dicts (Hostname, Status, Availability, ManagerStatus); none
    while the manager does not answer within 10 s (a manager that has just formed the swarm on a
    busy host is slow: CI's run at 544a230 failed `lab up` on one such call, not on the swarm)."""
    try:
        proc = lab.docker(n, "node", "ls", "--format",
                          "{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}",
                          check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return []
    rows = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        host, status, avail, mgr = (line.split("\t") + ["", "", "", ""])[:4]
        rows.append({"Hostname": host, "Status": status, "Availability": avail,
                     "ManagerStatus": mgr})
    return rows


def wait_ready(lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = node_rows(lab)
        if sum(row["Status"] == "Ready" for row in rows) == lab.config.nodes:
            return
        time.sleep(0.1)
    raise SwarmError(f"nodes not Ready after {timeout:.0f}s: {rows or 'the manager listed none (or did not answer)'}")
