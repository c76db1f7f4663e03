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
from .l7_probe import http_request, https_request, proxy_update_done
from .pki import Pki
from .stack_mesh import StackMesh
from .swarm_mesh import SwarmMesh
from .swarm_probe import http_hostname

STACK = "counter"
STACK_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "demo", "counter", "stack.yml")
EXPECTED = {"web": 2, "app": 5, "db": 1}
L7_PORT, L7_HOST, PROXY = 8080, "counter.local", "ingressmesh-proxy"
L7_HTTPS_PORT = 8443
TLS_SECRETS = ("counter_local_cert", "counter_local_key")  # named by the stack file's labels


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


def _start_mesh(lab: Lab, backend: str, kind: str):
    """ingressmesh on the lab: as the swarm stack (`ingressmesh install --stack`, with the L7
    layer), or as host processes (the working tree's code, logs in files, restartable)."""
    if kind == "stack":
        mesh = StackMesh(lab, backend=backend, l7_config=l7_lab.extension("default", "", L7_PORT,
                                                                          ssl_port=L7_HTTPS_PORT,
                                                                          proxy_secrets=TLS_SECRETS))
        mesh.up(timeout=120)  # `stack deploy` converges: a second run changes nothing
        _say(f"ingressmesh stack deployed (every agent in sync after {mesh.deployed_in:.1f} s): "
             "scripts/lab docker 1 -- stack ps ingressmesh")
        return mesh
    mesh = SwarmMesh(lab, backend=backend)
    if mesh.recorded_alive():
        _say(f"ingressmesh already running (pids {mesh.recorded_alive()})")
    else:
        mesh.up(timeout=60)
        _say(f"ingressmesh controller on node1 ({mesh.controller_url}) and agents on every node; logs in {mesh.dir}")
    return mesh


def up(backend: str, kind: str = "stack") -> None:
    started = time.monotonic()
    lab = Lab(LabConfig(), log=lambda msg: _say(f"  lab: {msg}"))
    if lab.status()["up"]:
        _say("lab already up: reusing it")
    else:
        lab.down(grace=0)  # whatever a crashed earlier run left
        times = lab.up()
        _say(f"lab up in {times[max(times, key=times.get)]:.1f} s")
    mesh = _start_mesh(lab, backend, kind)
    ca = _tls_secrets(lab, mesh)
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
    failed += _l7(lab, mesh, ca)
    if failed:
        raise SystemExit(f"{failed} requests failed; logs in {mesh.dir}")
    _say(f"\ndone in {time.monotonic() - started:.1f} s.  Try: scripts/lab status; scripts/lab docker 1 -- service ls;"
         f"\n  scripts/lab exec client -- wget -qO- http://{lab.node_address(2)}:8000/ ;  sudo make lab-down")


def _tls_secrets(lab: Lab, mesh: SwarmMesh) -> str:
    """The lab's own CA and a certificate for counter.local as the Docker secrets the stack's
    labels name (made once per lab); the CA file, for clients to check the certificate."""
    directory = os.path.join(mesh.dir, "pki")
    ca = os.path.join(directory, "ca.crt")
    present = all(lab.docker(1, "secret", "inspect", name, check=False).returncode == 0 for name in TLS_SECRETS)
    if present and os.path.exists(ca):
        return ca
    for name in TLS_SECRETS:
        lab.docker(1, "secret", "rm", name, check=False)  # half-made by an interrupted run
    pki = Pki(directory)
    for name, path in zip(TLS_SECRETS, pki.leaf("counter-local", L7_HOST, org="ingressmesh lab")):
        lab.docker(1, "secret", "create", name, path)
    _say(f"made a lab CA ({ca}) and the secrets {', '.join(TLS_SECRETS)} for https://{L7_HOST}")
    return ca


def _l7(lab: Lab, mesh: SwarmMesh, ca: str) -> int:
    """Deploys the L7 proxy service (kept by `l7 deploy --watch`), shows what it serves, and
    sends requests with Host: counter.local through every node, over HTTP and HTTPS; the
    number that failed."""
    if isinstance(mesh, SwarmMesh):  # the stack brought its own (ingressmesh-l7.yml)
        config_file = os.path.join(mesh.dir, "l7.toml")
        if "l7" in mesh.recorded_alive() and not all(k in _read(config_file) for k in ("PublishedSSLPort", "ProxySecrets")):
            mesh.stop("l7")  # a lab from before HTTPS (or ProxySecrets): deploy again
        if "l7" not in mesh.recorded_alive():
            l7_lab.deploy(mesh, l7_lab.extension("default", mesh.controller_url, L7_PORT, ssl_port=L7_HTTPS_PORT,
                                                 proxy_secrets=TLS_SECRETS))
    _wait("2 healthy L7 proxy tasks, their service's last rolling update done",
          lambda: _running(lab).get(PROXY, 0) == 2 and proxy_update_done(lab, PROXY), 180)
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
    _wait(f"https://{L7_HOST} served", lambda: _https(lab, 1, ca).startswith("HTTP 200"), 180)
    _say(f"L7 over HTTPS: https://{L7_HOST}:{L7_HTTPS_PORT} through every node, certificate checked against {ca}:")
    for n in config.node_numbers:
        for _ in range(2):
            line = _https(lab, n, ca)
            failed += not line.startswith("HTTP 200")
            _say(f"  {lab.node_address(n)}:{L7_HTTPS_PORT} SNI {L7_HOST} -> {line}")
    _say(f"  try: scripts/lab exec client -- curl --cacert {ca} --resolve {L7_HOST}:{L7_HTTPS_PORT}:"
         f"{lab.node_address(2)} https://{L7_HOST}:{L7_HTTPS_PORT}/")
    return failed


def _https(lab: Lab, n: int, ca: str) -> str:
    try:
        answer = https_request(lab.client_netns(), lab.node_address(n), L7_HTTPS_PORT, L7_HOST, ca,
                               alpn=("h2", "http/1.1"), timeout=5)
        plain = https_request(lab.client_netns(), lab.node_address(n), L7_HTTPS_PORT, L7_HOST, ca, timeout=5)
    except OSError as err:
        return f"FAILED: {err}"
    return (f"HTTP {plain.status}, certificate CN={plain.subject.get('commonName')} "
            f"O={plain.subject.get('organizationName')}, ALPN offers h2 -> {answer.protocol or 'none'}: "
            f"{plain.body.strip()[:40]}")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


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
    parser.add_argument("--mesh", default="stack", choices=("stack", "processes"),
                        help="How ingressmesh runs: the swarm stack (the recommended install; default) or host "
                             "processes (this checkout's code as it is now, logs in files).")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("the lab needs root: sudo make lab")
    try:
        down() if args.down else up(args.backend, args.mesh)
    except subprocess.CalledProcessError as err:
        sys.exit(f"{err}")


if __name__ == "__main__":
    main()
