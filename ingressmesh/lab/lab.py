"""The `Lab` object: a real N-node Docker Swarm on this machine, for tests, the CLI and any
code that needs one. Everything is named from a LabConfig, so a Lab rebuilt from the state
file (Lab.attach) manages a lab that another process brought up."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence

from . import dockerd, fabric, image_store, images, neighbours, procs, swarm, teardown
from .config import DOCKER, DOCKERD, LAB_API_VERSION, LabConfig
from .images import BUSYBOX_IMAGE, PYTHON_IMAGE
from .state import LabState

__all__ = ["Lab", "LabError", "BUSYBOX_IMAGE", "PYTHON_IMAGE"]


class LabError(RuntimeError):
    """The lab is not up, or a docker command against it failed."""


class Lab:
    """Handle on one lab (up or not). Methods taking `n` mean node n (1-based)."""

    def __init__(self, config: Optional[LabConfig] = None,
                 log: Callable[[str], None] = lambda msg: None) -> None:
        self.config = config or LabConfig()
        self.log = log

    @classmethod
    def attach(cls, lab_dir: str = LabConfig.lab_dir, log=lambda msg: None, **defaults) -> "Lab":
        """The lab whose state file is in lab_dir (its recorded config), else one from defaults."""
        recorded = LabState.load(os.path.join(lab_dir, "state.json")).data.get("config") or {}
        fields = {f.name for f in dataclasses.fields(LabConfig)}
        merged = {**defaults, **{k: v for k, v in recorded.items() if k in fields}}
        merged["lab_dir"] = lab_dir
        if "images" in merged:
            merged["images"] = tuple(merged["images"])
        return cls(LabConfig(**merged), log)

    # -- names and paths ------------------------------------------------------------------
    @property
    def node_names(self) -> list[str]:
        return [self.config.node_name(n) for n in self.config.node_numbers]

    def node_netns(self, n: int) -> str:
        return fabric.netns_path(self.config.node_netns_name(self._check(n)))

    def client_netns(self) -> str:
        return fabric.netns_path(self.config.client_netns_name)

    def node_address(self, n: int) -> str:
        return self.config.node_address(self._check(n))

    @property
    def client_address(self) -> str:
        return self.config.client_address

    def docker_socket(self, n: int) -> str:
        return "unix://" + self.config.docker_sock(self._check(n))

    def exec_root(self, n: int) -> str:
        return self.config.exec_root(self._check(n))

    def dockerd_pid(self, n: int) -> int:
        rec = LabState.load(self.config.state_file).dockerds.get(self._check(n))
        if not rec or not procs.alive(rec["pid"], rec["start"]):
            raise LabError(f"node{n}: dockerd is not running")
        return rec["pid"]

    def netns_dir(self, n: int) -> str:
        """Docker's ingress_sbox / lb_<net> / sandboxes: bind mounts that exist only in the
        dockerd's private mount namespace, reachable from here through /proc/PID/root."""
        return f"/proc/{self.dockerd_pid(n)}/root{self.exec_root(n)}/netns"

    def _check(self, n: int) -> int:
        if n not in self.config.node_numbers:
            raise LabError(f"no node {n!r} (nodes 1..{self.config.nodes})")
        return n

    # -- running things -------------------------------------------------------------------
    def docker(self, n: int, *args: str, check: bool = True, timeout: float = 60,
               input: Optional[str] = None) -> subprocess.CompletedProcess:
        """/usr/bin/docker (the 20.10 client matching the daemons) against node n."""
        argv = [DOCKER, "-H", self.docker_socket(n), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise LabError(f"node{n}: docker {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def service_logs(self, service: str, tail: int = 200, timeout: float = 20) -> str:
        """What `docker service logs` printed within `timeout`.  dockerd 20.10 sometimes never
        ends the stream (a node's task log subscription that does not close: CI waited 60 s at
        51124c0), so on timeout the lines that came are returned rather than an error."""
        try:
            proc = self.docker(1, "service", "logs", "--no-task-ids", "--no-trunc", "--tail", str(tail), service,
                               check=False, timeout=timeout)
        except subprocess.TimeoutExpired as cut:
            return "".join(part.decode(errors="replace") if isinstance(part, bytes) else (part or "")
                           for part in (cut.stdout, cut.stderr))
        return proc.stdout + proc.stderr

    def docker_client(self, n: int, **kwargs):
        """A docker SDK client for node n (caller closes it).  Its API version is fixed: left to
        negotiate, every new client asks GET /version, for which dockerd 20.10 runs
        `runc --version` and `docker-init --version`.  Tests poll with a new client every 0.2 s:
        under emulation those execs kept the guest's dockerds busy (a 3-task service took 176 s
        to start there)."""
        import docker
        kwargs.setdefault("version", LAB_API_VERSION)
        return docker.DockerClient(base_url=self.docker_socket(n), **kwargs)

    def _in_netns(self, path: str, argv: Sequence[str]) -> list[str]:
        if not os.path.exists(path):
            raise LabError(f"{path} does not exist: is the lab up?")
        return ["nsenter", f"--net={path}", "--", *argv]

    def run_in_node(self, n: int, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """argv in node n's netns, but this mount namespace (/run/netns, venvs visible)."""
        return subprocess.run(self._in_netns(self.node_netns(n), argv), **kw)

    def popen_in_node(self, n: int, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self._in_netns(self.node_netns(n), argv), **kw)

    def run_in_client(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self._in_netns(self.client_netns(), argv), **kw)

    def popen_in_client(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self._in_netns(self.client_netns(), argv), **kw)

    # -- lifecycle ------------------------------------------------------------------------
    def up(self, keep_on_failure: bool = False) -> dict[str, float]:
        """Bring the lab up; returns seconds per phase. On failure it tears down what it made."""
        for path in (DOCKERD, DOCKER, images.BUSYBOX_BIN):
            if not os.access(path, os.X_OK):
                raise LabError(f"{path} missing (apt-get install docker.io busybox-static)")
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, dockerd)")
        if fabric.existing(self.config) or os.path.exists(self.config.state_file):
            raise LabError(f"lab {self.config.prefix} ({self.config.lab_dir}) is up or left "
                           "over: run lab down first")
        try:
            return self._up()
        except BaseException:
            if not keep_on_failure:
                self.log("lab up failed: tearing down what it created")
                teardown.down(self.config, grace=0)
            raise

    def _up(self) -> dict[str, float]:
        cfg, times, t0 = self.config, {}, time.monotonic()

        def phase(name: str) -> None:
            times[name] = time.monotonic() - t0
            self.log(f"{name}: {times[name]:.1f}s")

        tarballs = {key: images.ensure(cfg.image_cache, key, self.log) for key in cfg.images}
        phase("images cached")
        state = LabState(cfg.state_file)
        state.set("config", dataclasses.asdict(cfg))
        state.set("phase", "starting")
        fabric.create(cfg, state)
        raised = neighbours.raise_limits(state)
        if raised:
            self.log("neighbour tables (shared by every node: one kernel) raised to "
                     + ", ".join(f"{k}={neighbours.LIMITS[k.split('.')[1]]}" for k in sorted(raised)))
        phase("netns+bridge")
        for path in dockerd.ensure_run_dirs():
            state.add("run_dirs_created", path)
        dockerd.write_script(cfg)
        # The images go into the first node only; the others start on a copy of its image store.
        # A ready store in the cache (image_store.py) spares even that import.
        first, others = cfg.node_numbers[0], cfg.node_numbers[1:]
        ready_store = image_store.find(cfg.image_cache, tarballs)
        if ready_store:
            for n in cfg.node_numbers:
                image_store.unpack(ready_store, cfg.data_root(n))
            phase(f"image store unpacked from {ready_store}")
            self._launch(state, cfg.node_numbers)
        elif cfg.images:
            self._launch(state, [first])
            with ThreadPoolExecutor(max_workers=len(cfg.images)) as pool:
                list(pool.map(lambda key: self._import(first, tarballs[key], key), cfg.images))
            phase(f"images imported into node{first}")
            for n in others:
                images.copy_image_store(cfg.data_root(first), cfg.data_root(n))
            phase("image store copied to the other nodes")
            self._launch(state, others)
        else:
            self._launch(state, cfg.node_numbers)
        phase("dockerds up")
        for n, subnet in cfg.gwbridges:  # Docker's documented way: made before the node joins
            self.docker(n, "network", "create", "--driver", "bridge", "--subnet", subnet,
                        "--opt", "com.docker.network.bridge.name=docker_gwbridge",
                        "--opt", "com.docker.network.bridge.enable_icc=false",
                        "--opt", "com.docker.network.bridge.enable_ip_masquerade=true", "docker_gwbridge")
        swarm.form(self, cfg.ready_timeout)
        phase(f"swarm of {cfg.nodes} Ready")
        state.set("phase", "up")
        return times

    def _launch(self, state: LabState, nodes) -> None:
        """Start these nodes' dockerds at once, then wait until each answers."""
        for n in nodes:
            pid = dockerd.launch(self.config, n)
            state.dockerd(n, pid, procs.start_time(pid))
        for n in nodes:
            rec = state.dockerds[n]
            dockerd.wait_ready(self.config, n, rec["pid"], rec["start"], self.config.ready_timeout)

    def import_image(self, n: int, key: str) -> None:
        """One more lab image into node n of a running lab (built into the cache first if missing)."""
        self._import(n, images.ensure(self.config.image_cache, key, self.log), key)

    def _import(self, n: int, tarball: str, key: str) -> None:
        argv = images.import_argv([DOCKER, "-H", self.docker_socket(n)], tarball, images.SPECS[key])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.config.import_timeout)
        if proc.returncode != 0:
            raise LabError(f"node{n}: importing {key}: {proc.stderr.strip()}")

    def restart_dockerd(self, n: int, timeout: float = 120.0) -> float:
        """Restart node n's dockerd as `systemctl restart docker` does on a host: SIGTERM (it stops
        its containers and removes its sandboxes, ingress_sbox too), then a new one on the same
        data root, which rejoins the swarm and re-programs its mesh; seconds until it answers."""
        started = time.monotonic()
        state = LabState.load(self.config.state_file)
        rec = state.dockerds.get(self._check(n))
        if rec and procs.alive(rec["pid"], rec["start"]):
            procs.kill([rec["pid"]], signal.SIGTERM)
            if procs.wait_gone({rec["pid"]: rec["start"]}, timeout):
                raise LabError(f"node{n}: dockerd (pid {rec['pid']}) still runs {timeout:g} s after SIGTERM")
        pid = dockerd.launch(self.config, n)
        state.dockerd(n, pid, procs.start_time(pid))
        dockerd.wait_ready(self.config, n, pid, state.dockerds[n]["start"], timeout)
        return time.monotonic() - started

    def down(self, grace: float = 1.0) -> dict:
        """Remove everything the lab made (see teardown.py); safe to repeat, and after crashes."""
        return teardown.down(self.config, grace)

    def leftovers(self) -> list[str]:
        return teardown.leftovers(self.config)

    def status(self) -> dict:
        """What is up: per-node netns/dockerd/ping, client and bridge netns, `node ls`."""
        cfg = self.config
        state = LabState.load(cfg.state_file)
        nodes = []
        for n in cfg.node_numbers:
            rec = state.dockerds.get(n) or {}
            running = bool(rec) and procs.alive(rec["pid"], rec["start"])
            nodes.append({"node": cfg.node_name(n), "address": cfg.node_address(n),
                          "manager": cfg.is_manager(n),
                          "netns": os.path.exists(self.node_netns(n)),
                          "dockerd_pid": rec.get("pid") if running else None,
                          "answers": running and dockerd.ping(cfg.docker_sock(n)),
                          "socket": self.docker_socket(n)})
        swarm_rows = swarm.node_rows(self) if nodes[0]["answers"] else []
        ready = sum(row["Status"] == "Ready" for row in swarm_rows)
        up = (state.data.get("phase") == "up" and os.path.exists(self.client_netns())
              and all(node["netns"] and node["answers"] for node in nodes) and ready == cfg.nodes)
        return {"up": up, "phase": state.data.get("phase", "down"), "nodes": nodes,
                "client_netns": os.path.exists(self.client_netns()),
                "bridge_netns": os.path.exists(fabric.netns_path(cfg.bridge_netns_name)),
                "swarm": swarm_rows,
                "paths": {"lab_dir": cfg.lab_dir, "state": cfg.state_file,
                          "image_cache": cfg.image_cache}}
