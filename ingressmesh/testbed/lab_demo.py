"""`sudo make lab`: a real 3-node swarm, ingressmesh on it, the counter demo stack, and proof.

Idempotent: a lab that is up is reused, running agents are kept, `stack deploy` converges.
Afterwards the lab stays up (agents running) for the user; `make lab-down` removes it all.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from ..lab import Lab, LabConfig
from . import l7_lab
from .l7_probe import http_request
from .swarm_mesh import SwarmMesh
from .swarm_probe import http_hostname

STACK = "counter"
STACK_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "demo", "counter", "stack.yml")
EXPECTED = {"web": 2, "app": 5, "db": 1}
L7_PORT, L7_HOST, PROXY = 8080, "counter.local", "ingressmesh-proxy"


def _say(text: str) -> None:
    print(text, flush=True)


def _running(lab: Lab) -> dict[str, int]:
    client = lab.docker_client(1)
    try:
        names = {s.id: s.name.removeprefix(f"{STACK}_") for s in client.services.list()}
        counts: dict[str, int] = {}
        for task in client.api.tasks(filters={"desired-state": "running"}):
            if (task.get("Status") or {}).get("State") == "running":
                short = names.get(task["ServiceID"], "?")
                counts[short] = counts.get(short, 0) + 1
        return counts
    finally:
        client.close()


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:g} s: {what}")


def up(backend: str) -> None:
    started = time.monotonic()
    lab = Lab(LabConfig(), log=lambda msg: _say(f"  lab: {msg}"))
    if lab.status()["up"]:
        _say("lab already up: reusing it")
    else:
        lab.down(grace=0)  # whatever a crashed earlier run left
        times = lab.up()
        _say(f"lab up in {times[max(times, key=times.get)]:.1f} s")
    mesh = SwarmMesh(lab, backend=backend)
    if mesh.recorded_alive():
        _say(f"ingressmesh already running (pids {mesh.recorded_alive()})")
    else:
        mesh.up(timeout=60)
        _say(f"ingressmesh controller on node1 ({mesh.controller_url}) and agents on every node; logs in {mesh.dir}")
    lab.docker(1, "stack", "deploy", "-c", STACK_FILE, STACK, timeout=120)
    _wait("the counter stack to run", lambda: all(_running(lab).get(k, 0) == v for k, v in EXPECTED.items()), 180)
    mesh.wait_synced(timeout=60)
    _say(f"stack '{STACK}' running: {_running(lab)}")
    config = lab.config
    show = lab.run_in_node(1, [sys.executable, "-m", "ingressmesh", "show", "--backend", backend,
                               "--exec-root", config.exec_root(1), "--docker-pidfile", config.pidfile(1),
                               "--controller", mesh.controller_url, "--token-file", mesh.token_file],
                           capture_output=True, text=True, timeout=60)
    _say("\n$ ingressmesh show   (on node1)\n" + (show.stdout or show.stderr))
    _say("Requests from the client namespace through every node's published port 8000:")
    failed = 0
    for n in config.node_numbers:
        for _ in range(3):
            try:
                answer = http_hostname(lab.client_netns(), lab.node_address(n), 8000, timeout=5)
            except OSError as err:
                answer = f"FAILED: {err}"
                failed += 1
            _say(f"  {lab.node_address(n)}:8000 -> {answer}")
    failed += _l7(lab, mesh)
    if failed:
        raise SystemExit(f"{failed} requests failed; logs in {mesh.dir}")
    _say(f"\ndone in {time.monotonic() - started:.1f} s.  Try: scripts/lab status; scripts/lab docker 1 -- service ls;"
         f"\n  scripts/lab exec client -- wget -qO- http://{lab.node_address(2)}:8000/ ;  sudo make lab-down")


def _l7(lab: Lab, mesh: SwarmMesh) -> int:
    """Deploys the L7 proxy service (kept by `l7 deploy --watch`), shows what it serves, and
    sends requests with Host: counter.local through every node; the number that failed."""
    if "l7" not in mesh.recorded_alive():
        l7_lab.deploy(mesh, l7_lab.extension("default", mesh.controller_url, L7_PORT))
    _wait("2 healthy L7 proxy tasks", lambda: _running(lab).get(PROXY, 0) == 2, 180)
    _wait(f"{L7_HOST} routed", lambda: _answers(lab, 1).status == 200, 60)
    config = lab.config
    for n in config.node_numbers:
        show = lab.run_in_node(n, [sys.executable, "-m", "ingressmesh", "show", "--l7",
                                   "--docker", f"unix://{config.docker_sock(n)}"],
                               capture_output=True, text=True, timeout=60)
        if "no proxy task" not in show.stdout:
            _say(f"\n$ ingressmesh show --l7   (on node{n})\n" + (show.stdout or show.stderr))
            break
    _say(f"L7: requests with Host: {L7_HOST} from the client namespace through every node's port {L7_PORT}:")
    failed = 0
    for n in config.node_numbers:
        for _ in range(3):
            answer = _answers(lab, n)
            if answer.status != 200:
                failed += 1
            _say(f"  {lab.node_address(n)}:{L7_PORT} Host: {L7_HOST} -> HTTP {answer.status} via proxy "
                 f"{answer.headers.get('x-proxy-id', '?')} -> {answer.headers.get('x-upstream-addr', '?')}: "
                 f"{answer.body.strip()[:60]}")
    return failed


def _answers(lab: Lab, n: int):
    from .l7_probe import Answer
    try:
        return http_request(lab.client_netns(), lab.node_address(n), L7_PORT, L7_HOST, timeout=5)
    except OSError as err:
        return Answer(0, {}, f"FAILED: {err}")


def down() -> None:
    lab = Lab(LabConfig(), log=lambda msg: _say(f"  lab: {msg}"))
    mesh = SwarmMesh(lab)
    stopped = mesh.stop_recorded()
    if stopped:
        _say(f"stopped ingressmesh processes {stopped}")
    result = lab.down()
    mesh.remove_files()
    _say(f"lab down: {result}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--down", action="store_true", help="Stop ingressmesh and remove the lab.")
    parser.add_argument("--backend", default="auto", choices=("auto", "nftables", "ipvs"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the lab needs root: sudo make lab")
    try:
        down() if args.down else up(args.backend)
    except subprocess.CalledProcessError as err:
        sys.exit(f"{err}")


if __name__ == "__main__":
    main()
