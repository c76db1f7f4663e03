"""Pieces of the L7 benchmark (bench/l7.py): loopback-only processes, HAProxy configs, wrk,
a stand-in for the controller's snapshot API, snapshot builders and /proc memory readings.

Every address used here is checked to be in 127.0.0.0/8; every process started is kept by
PID and stopped by that PID (never by name); every wait is bounded in time.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import ipaddress
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlsplit

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def loopback(address: str) -> str:
    if ipaddress.ip_address(address) not in LOOPBACK:
        raise ValueError(f"{address}: the L7 bench sends traffic to 127.0.0.0/8 only")
    return address


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((loopback(address), 0))
        return sock.getsockname()[1]


def wait_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((loopback(address), port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {address}:{port} after {timeout:g} s") from None
            time.sleep(0.02)


class Processes:
    """Processes this bench started, stopped by PID in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []
        self.extra_pids: list[int] = []  # grandchildren we learned about (a proxy's haproxy master)

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            try:
                self.stop(proc)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass
        for pid in self.extra_pids:  # a proxy's haproxy, if the proxy died without stopping it
            try:
                with open(f"/proc/{pid}/comm", encoding="ascii") as handle:
                    if handle.read().strip() == "haproxy":
                        os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


# -- HAProxy configs ---------------------------------------------------------------------------
def backend_config(addresses: list[str], port: int) -> str:
    """One HAProxy answering 200 on every address:port itself, body = the address it was
    reached on, so a response names its backend server.  Not the bottleneck: no upstream."""
    binds = "".join(f"    bind {loopback(a)}:{int(port)}\n" for a in addresses)
    return ("global\n    nbthread 1\n\ndefaults\n    mode http\n    timeout connect 5s\n"
            "    timeout client 60s\n    timeout server 60s\n    timeout http-keep-alive 10s\n\n"
            f"frontend backends\n{binds}"
            '    http-request return status 200 content-type text/plain lf-string "%[dst]"\n')


# The hand-written baseline (b): what one would write for "app.local → these servers".
HAND_CONFIG = """defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s

frontend http
    bind 127.0.0.1:{port}
    use_backend app if {{ hdr(host) -i app.local }}

backend app
    balance roundrobin
{servers}
"""


# The hand-written baseline (d): (b) plus every header the product adds and the same request id
# (its unique-id format), written by hand: what one would write to behave as Interlock does for
# app.local.  (c)/(d) is what the product's own routing machinery costs (issue 20).
SAME_HEADERS_CONFIG = """defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s

frontend http
    bind 127.0.0.1:{port}
    http-request del-header X-Request-Id
    unique-id-format bench-%{{+X}}o%pid-%Ts-%rt
    unique-id-header X-Request-Id
    http-request del-header X-Forwarded-For
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-response set-header X-Request-Id %[unique-id]
    http-response set-header X-Proxy-Id bench
    http-response set-header X-Server-Info ingressmesh
    use_backend app if {{ hdr(host) -i app.local }}

backend app
    balance roundrobin
    http-response set-header X-Upstream-Addr %[bc_dst]:%[bc_dst_port]
    http-response set-header X-Upstream-Response-Time %Tr
{servers}
"""


def same_headers_config(port: int, servers: list[tuple[str, int]]) -> str:
    lines = "".join(f"    server s{i + 1} {loopback(a)}:{p}\n" for i, (a, p) in enumerate(servers))
    return SAME_HEADERS_CONFIG.format(port=int(port), servers=lines.rstrip("\n"))


def hand_config(port: int, servers: list[tuple[str, int]]) -> str:
    lines = "".join(f"    server s{i + 1} {loopback(a)}:{p}\n" for i, (a, p) in enumerate(servers))
    return HAND_CONFIG.format(port=int(port), servers=lines.rstrip("\n"))


def start_haproxy(procs: Processes, binary: str, workdir: str, name: str, text: str,
                  address: str, port: int) -> subprocess.Popen:
    """haproxy -W -db on `text`; returns once address:port accepts connections."""
    path = os.path.join(workdir, f"{name}.cfg")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    log = open(os.path.join(workdir, f"{name}.log"), "wb")  # noqa: SIM115 - kept with the process
    proc = procs.start([binary, "-W", "-db", "-f", path], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(address, port)
    except TimeoutError:
        raise RuntimeError(f"haproxy {name} did not start: {tail(log.name)}") from None
    return proc


@contextlib.contextmanager
def stderr_to(path: str):
    """fd 2 into `path` meanwhile: a process started now (the product's haproxy master, which
    logs to its stderr for good) writes there instead of into the report."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(handle.read().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def problems(path: str, lines: int = 5) -> str:
    """The last warnings and errors of a proxy's log (its own and HAProxy's alerts)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            found = [line.strip() for line in handle if " ERROR " in line or " WARNING " in line or "[ALERT]" in line]
    except OSError:
        return "(no log)"
    return " | ".join(found[-lines:]) or "(no warnings)"


# -- HTTP probes and wrk -----------------------------------------------------------------------
def get(port: int, host: str, address: str = "127.0.0.1", timeout: float = 2.0) -> tuple[int, bytes]:
    """One request on a fresh connection (a kept-alive one would stay on an old worker)."""
    conn = http.client.HTTPConnection(loopback(address), port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": host, "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not found:
        raise ValueError(f"wrk latency {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(text: str) -> dict:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    total = re.search(r"^\s+(\d+) requests in", text, re.M)
    if not (rps and p50 and p99 and total):
        raise ValueError("unexpected wrk output: " + text[-400:])
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "requests": int(total.group(1)),
            "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def wrk_argv(url: str, connections: int, duration: int, close: bool) -> list[str]:
    loopback(urlsplit(url).hostname)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-H", "Host: app.local"]
    if close:
        argv += ["-H", "Connection: close"]
    return argv + [url]


def run_wrk(argv: list[str], duration: float) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-300:]}")
    result = parse_wrk(done.stdout)
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw {result['non_2xx']} non-2xx and {result['socket_errors']} socket errors")
    return result


# -- a stand-in for the controller's snapshot API ----------------------------------------------
class FakeController:
    """GET /v1/snapshot?since=V&wait=W with the bearer token, like the real controller: 200 at
    once when the current version is not V, else a long-poll woken by publish(), else 304.

    Headers and body go out as two writes (http.server, as ingressmesh/daemon/http.py did up
    to 1fb98d1).  With `nagle` False (the default) the socket has TCP_NODELAY, so the body
    leaves at once; with True it does not (as that server's sockets), and on a kept-alive
    connection the body waits for the client's delayed ACK of the headers."""

    MAX_WAIT = 30.0

    def __init__(self, token: str, address: str = "127.0.0.1", nagle: bool = False):
        self.token, self.cond = token, threading.Condition()
        self.version, self.body, self.closing = 0, b"", False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = not nagle

            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                if parts.path != "/v1/snapshot":
                    return self._send(404, b'{"error": "not found"}')
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._send(401, b'{"error": "bad token"}')
                query = parse_qs(parts.query)
                try:
                    since = int(query.get("since", ["0"])[0])
                    wait = min(max(float(query.get("wait", ["0"])[0]), 0.0), outer.MAX_WAIT)
                except ValueError:
                    return self._send(400, b'{"error": "bad since or wait"}')
                with outer.cond:
                    outer.cond.wait_for(lambda: outer.closing or (outer.body and outer.version != since), wait)
                    body = outer.body if outer.body and outer.version != since else None
                return self._send(200, body) if body else self._send(304, None)

            def _send(self, status: int, body: Optional[bytes]):
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((loopback(address), 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def publish(self, cluster: dict) -> float:
        """Publishes a new version; returns the perf_counter time the change was made (before
        serialisation, so that is part of the measured latency, as on the real controller)."""
        started = time.perf_counter()
        with self.cond:
            self.version += 1
            self.body = json.dumps({"version": self.version, "cluster": cluster}).encode()
            self.cond.notify_all()
        return started

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()


# -- snapshots in the controller's format ------------------------------------------------------
class Cluster:
    """One node, one overlay network ("app", 127.0.0.0/8 so tasks can live on loopback),
    services labelled for the proxy, tasks with one address each.  Task addresses are unique
    (the snapshot format requires it): a task that must answer takes the next free address of
    `live` (freed addresses go to the back of the queue)."""

    def __init__(self, live: list[str]):
        self.services: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.live, self.free = frozenset(live), collections.deque(live)

    def service(self, name: str, host: str, port: int) -> "Cluster":
        self.services[name] = {"id": name, "name": name, "labels": {
            "com.docker.lb.hosts": host, "com.docker.lb.port": str(port)}}
        return self

    def task(self, task_id: str, service: str, address: Optional[str] = None) -> str:
        """Adds a task; its address (the next free live one unless given)."""
        address = loopback(address or self.free.popleft())
        self.tasks[task_id] = {"id": task_id, "service_id": service, "node_id": "n1", "since": 1.0,
                               "addresses": [{"network_id": "app-net", "address": address}]}
        return address

    def remove_task(self, task_id: str) -> None:
        address = self.tasks.pop(task_id)["addresses"][0]["address"]
        if address in self.live:
            self.free.append(address)

    def to_dict(self) -> dict:
        return {"nodes": [{"id": "n1", "hostname": "node1", "address": "127.0.0.1"}],
                "networks": [{"id": "app-net", "name": "app", "subnet": "127.0.0.0/8"}],
                "services": list(self.services.values()), "tasks": list(self.tasks.values())}


# -- memory --------------------------------------------------------------------------------------
def rss_kb(pid: int, field: str = "VmRSS", path: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{path}", encoding="ascii", errors="replace") as handle:
            found = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M)
        return int(found.group(1)) if found else 0
    except OSError:
        return 0


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (a worker shares its master's) counted once in a sum."""
    return rss_kb(pid, "Pss", "smaps_rollup")


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/*/stat, so no CONFIG_PROC_CHILDREN needed)."""
    from ingressmesh.lab.procs import all_pids
    found = []
    for entry in all_pids():
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(entry)
    return sorted(found)


def haproxy_rss(master: int) -> dict:
    """VmRSS of a haproxy master and each worker; their sum, and the sum of their PSS."""
    pids = [master, *children(master)]
    rss = [rss_kb(p) for p in pids]
    return {"master_kb": rss[0], "workers_kb": rss[1:], "total_mb": round(sum(rss) / 1024, 1),
            "pss_total_mb": round(sum(pss_kb(p) for p in pids) / 1024, 1)}


def cpu_ns(master: int) -> int:
    """On-CPU time (ns, from /proc/<pid>/task/*/schedstat) of a haproxy master and its workers,
    all threads: finer than the 10 ms ticks of /proc/<pid>/stat."""
    total = 0
    for pid in [master, *children(master)]:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total


def steal_percent(before: list[int], after: list[int]) -> float:
    """CPU time stolen by the hypervisor between two /proc/stat readings, in % of all CPU time."""
    delta = [b - a for a, b in zip(before, after)]
    return round(100.0 * delta[7] / sum(delta), 1) if sum(delta) else 0.0


def cpu_stat() -> list[int]:
    """user nice system idle iowait irq softirq steal, in clock ticks, of the whole machine."""
    with open("/proc/stat", encoding="ascii") as handle:
        return [int(x) for x in handle.readline().split()[1:9]]


def own_ns() -> int:
    """CPU time (ns) of this process and its reaped children (wrk)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return round(total * 1e9)


def other_percent(before: list[int], after: list[int], own_ns: int) -> float:
    """% of the machine's CPU time that processes other than the `own_ns` ones used between two
    /proc/stat readings (user + nice + system; irq and softirq time, where loopback traffic is
    mostly handled, is charged to no process and left out)."""
    delta = [b - a for a, b in zip(before, after)]
    busy = delta[0] + delta[1] + delta[2]
    own = own_ns * os.sysconf("SC_CLK_TCK") / 1e9
    return round(max(0.0, 100.0 * (busy - own) / sum(delta)), 1) if sum(delta) else 0.0


# -- what the product config adds over the hand-written one, one piece at a time ---------------
FEATURES = {
    "unique-id (X-Request-Id)": (("unique-id-format", "unique-id-header", "X-Request-Id"), False),
    "request header rewrites": (("del-header X-Forwarded-For", "option forwardfor", "set-header X-Real-IP",
                                 "set-header X-Forwarded-Proto"), False),
    "response headers (4)": (("set-header X-Proxy-Id", "set-header X-Server-Info", "set-header X-Upstream-Addr",
                              "set-header X-Upstream-Response-Time"), False),
    "host var + map lookup": (("set-var(txn.host)", "set-var-fmt(txn.route)"), True),
}


def without(config: str, features: list[str], backend: str, host: str) -> str:
    """The product config with `features` taken out (map routing → one hdr(host) acl)."""
    drop = [marker for name in features for marker in FEATURES[name][0]]
    acl = any(FEATURES[name][1] for name in features)
    lines = []
    for line in config.splitlines():
        if any(marker in line for marker in drop):
            continue
        if acl and line.startswith("    use_backend %[var(txn.route)"):
            line = f"    use_backend {backend} if {{ hdr(host) -i {host} }}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def rebind(config: str, ports: dict[int, int], admin_socket: str) -> str:
    """The same config on other ports and another admin socket (to run next to the original;
    haproxy binds with SO_REUSEPORT, so a port left the same would be shared silently)."""
    for old, new in ports.items():
        config = config.replace(f"127.0.0.1:{old}\n", f"127.0.0.1:{new}\n")
    return re.sub(r"stats socket \S+", f"stats socket {admin_socket}", config)


def rebind_all(config: str, admin_socket: str) -> tuple[str, int]:
    """Every bind on a fresh port; the config and the first frontend's new port."""
    old = [int(p) for p in re.findall(r"^\s+bind 127\.0\.0\.1:(\d+)$", config, re.M)]
    ports = {p: free_port() for p in old}
    return rebind(config, ports, admin_socket), ports[old[0]]


# -- instructions per request, under callgrind (deterministic: other load does not change it) ---
def single_process(config: str) -> str:
    """The config for one haproxy process with one thread (no master-worker), for valgrind."""
    lines = [line for line in config.splitlines() if "master-worker" not in line and "mworker-" not in line]
    if "global" not in lines:
        lines = ["global", ""] + lines
    index = lines.index("global")
    return "\n".join(lines[:index + 1] + ["    nbthread 1"] + lines[index + 1:]) + "\n"


def _callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], capture_output=True, check=True, timeout=60)


def instructions_per_request(procs: Processes, binary: str, workdir: str, name: str, config: str, port: int,
                             modes: dict, duration: int, connections: int = 4) -> dict:
    """haproxy under callgrind: user-space instructions per request for each wrk mode, counted
    only while wrk runs (after a warm-up)."""
    cfg, out = os.path.join(workdir, f"{name}.cfg"), os.path.join(workdir, f"{name}.callgrind")
    with open(cfg, "w", encoding="utf-8") as handle:
        handle.write(single_process(config))
    log = open(os.path.join(workdir, f"{name}.log"), "wb")  # noqa: SIM115 - kept with the process
    proc = procs.start(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                        binary, "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port("127.0.0.1", port, timeout=60)
        url = f"http://127.0.0.1:{port}/"
        run_wrk(wrk_argv(url, connections, 1, False), 1)  # warm-up, not counted
        found = {}
        for dump, (mode, close) in enumerate(modes.items(), 1):
            _callgrind(proc.pid, "-i", "on")
            result = run_wrk(wrk_argv(url, connections, duration, close), duration)
            _callgrind(proc.pid, "-i", "off")
            _callgrind(proc.pid, "-d")
            with open(f"{out}.{dump}", encoding="ascii", errors="replace") as handle:
                total = int(re.search(r"^totals:\s+(\d+)", handle.read(), re.M).group(1))
            found[mode] = {"instructions_per_req": round(total / max(1, result["requests"])),
                           "requests": result["requests"]}
        return found
    finally:
        procs.stop(proc, timeout=30)


def finish(results: dict, out: str, render, stat_before, started: float) -> int:
    """The end of an L7 bench run: machine readings, the printed table, the JSON; exit status 1
    only if a measurement failed."""
    results["machine"]["steal_percent"] = steal_percent(stat_before, cpu_stat())
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    print(render(results))
    print(f"({results['elapsed_s']:.0f} s)  JSON: {out}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    return 1 if results["failures"] else 0


def run_main(main) -> None:
    """Runs a bench's main(); Ctrl-C stops everything it started (its finally blocks) and exits 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything this bench started is stopped", file=sys.stderr)
        sys.exit(130)
