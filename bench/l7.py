"""L7 benchmark: what the ingressmesh proxy's HAProxy costs per request, how fast a route or
endpoint change reaches traffic, and what 1,000 host routes cost.  All on loopback.

    .venv/bin/python bench/l7.py [--quick] [--duration 5] [--connections 16] [--repeat 2]
                                 [--trials 20] [--routes 1000] [--explain] [--controller-nagle]
                                 [--out bench/results/l7.json]

1. Throughput/latency (wrk -t1, keep-alive and Connection: close) to the same backend servers
   (HAProxy `http-request return` on 127.0.0.2-5) (a) directly, (b) through a hand-written
   minimal HAProxy config, (c) through the config ingressmesh renders (plan_routes +
   RouteApplier + HAProxy), (d) through a hand-written config adding the same headers and request
   id as (c) (SAME_HEADERS_CONFIG); (c)/(b) and (c)/(d) = `same_headers_ratio` (target >= 0.95).  With
   --explain, haproxy's instructions per request (callgrind) for (b), (c), and (c) with each
   piece it adds over (b) taken out in turn.
2. Route-change latency: the real `ingressmesh proxy` process follows a stand-in controller;
   a new host (reload) and a new task (runtime API) are timed from publish to first answer.
3. 1,000 host routes: plan + render, `haproxy -c`, start, seamless reload, memory.
4. --tls-hosts (10,000) TLS hosts: plan, certificates, render, `haproxy -c`, start, reload, memory
   (l7_tls_scale.py).
Exits 1 only if a measurement failed.  Results: bench/results/l7.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import l7_helpers as h  # noqa: E402  (bench/ is not a package)
from l7_tls_scale import tls_hosts_at_scale  # noqa: E402
from ingressmesh import snapshot  # noqa: E402
from ingressmesh.l7 import slots  # noqa: E402
from ingressmesh.l7.applier import RouteApplier  # noqa: E402
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles  # noqa: E402
from ingressmesh.l7.render import ProxySettings, render_config, render_map  # noqa: E402
from ingressmesh.l7.routes import plan_routes  # noqa: E402
from ingressmesh.plan import PlanOptions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "l7.json")
TARGET = 0.95
SERVERS = [f"127.0.0.{i}" for i in range(2, 6)]  # the backend servers of app.local
# Every task address in a snapshot is unique (snapshot.from_dict checks it): tasks that must
# answer take one of these (all bound by the backend HAProxy), the other 1,000-route tasks get
# an address in 127.1.0.0/16 where nothing listens and no request is ever sent.
LIVE = [f"127.0.0.{i}" for i in range(2, 255)]
MAX_TRIALS = 100
REFERENCE_POLL_S = {"Interlock (PollInterval default)": 3.0, "Traefik swarm provider (refreshSeconds default)": 15.0}
OPTIONS = PlanOptions(now=1000.0)
MODES = {"keep-alive": False, "close": True}  # wrk's default, and -H "Connection: close"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _stats(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(p99, 1),
            "max_ms": round(ordered[-1], 1), "samples_ms": [round(s, 1) for s in samples_ms]}


class Bench:
    def __init__(self, args, procs: h.Processes, workdir: str):
        self.args, self.procs, self.workdir = args, procs, workdir
        self.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.port = h.free_port()  # every backend server listens on this port, at its own address
        self.backends_pid = 0  # the backend servers' haproxy master

    def applier(self, name: str) -> RouteApplier:
        path = os.path.join(self.workdir, name)
        os.makedirs(path, mode=0o700)
        settings = ProxySettings(http_port=h.free_port(), bind_address="127.0.0.1", stats_port=h.free_port(),
                                 admin_socket=os.path.join(path, "admin.sock"), proxy_id="bench")
        return RouteApplier(HAProxy(HAProxyFiles(path), binary=self.haproxy), settings)

    def cluster(self, tasks: int = len(SERVERS)) -> h.Cluster:
        """app.local on the first `tasks` backend servers."""
        found = h.Cluster(LIVE).service("app", "app.local", self.port)
        for i in range(tasks):
            found.task(f"app-{i}", "app")
        return found

    def add_routes(self, swarm: h.Cluster) -> None:
        """--routes services, each with its own host and 2 tasks (addresses nobody listens on)."""
        for i in range(self.args.routes):
            name = f"svc{i:05d}"
            swarm.service(name, f"{name}.bench.local", self.port)
            for j in range(2):
                swarm.task(f"{name}-{j}", name, f"127.1.{(2 * i + j) // 256}.{(2 * i + j) % 256}")

    # -- 1. throughput ---------------------------------------------------------------------------
    def wrk(self, url: str, close: bool, master: int, duration: float) -> dict:
        """One wrk run; with the CPU time per request of the haproxy behind `url`, and how much
        of the machine processes other than this bench's used meanwhile (noise)."""
        argv = h.wrk_argv(url, self.args.connections, duration, close)
        pids = {master, self.backends_pid}
        before, stat, own = h.cpu_ns(master), h.cpu_stat(), h.own_ns() + sum(map(h.cpu_ns, pids))
        result = h.run_wrk(argv, duration)
        used = h.cpu_ns(master) - before
        own = h.own_ns() + sum(map(h.cpu_ns, pids)) - own
        return {**result, "cpu_us_per_req": round(used / 1000 / max(1, result["requests"]), 2),
                "other_cpu_pct": h.other_percent(stat, h.cpu_stat(), own), "command": shlex.join(argv)}

    def throughput(self) -> dict:
        args, modes = self.args, MODES
        hand_port = h.free_port()
        hand_text = h.hand_config(hand_port, [(a, self.port) for a in SERVERS])
        hand = h.start_haproxy(self.procs, self.haproxy, self.workdir, "hand", hand_text, "127.0.0.1", hand_port)
        same_port = h.free_port()
        same_text = h.same_headers_config(same_port, [(a, self.port) for a in SERVERS])
        same = h.start_haproxy(self.procs, self.haproxy, self.workdir, "same", same_text, "127.0.0.1", same_port)
        product = self.applier("product")
        try:
            swarm = self.cluster()
            table = plan_routes(snapshot.from_dict(swarm.to_dict()), options=OPTIONS)
            if product.apply(table).how != "start":
                raise RuntimeError(f"product haproxy did not start: {product.last_error}")
            port = product.settings.http_port
            targets = {"a": (f"http://{SERVERS[0]}:{self.port}/", self.backends_pid),
                       "b": (f"http://127.0.0.1:{hand_port}/", hand.pid),
                       "c": (f"http://127.0.0.1:{port}/", product.haproxy.master_pid),
                       "d": (f"http://127.0.0.1:{same_port}/", same.pid)}
            runs = {mode: {t: [] for t in targets} for mode in modes}
            for rep in range(args.repeat):
                for mode, close in modes.items():  # interleaved, b/c order alternating: drift hits both
                    for t in ("a", "b", "c", "d") if rep % 2 == 0 else ("a", "d", "c", "b"):
                        url, master = targets[t]
                        runs[mode][t].append(self.wrk(url, close, master, args.duration))
            result = {"how": "best of %d (highest req/s)" % args.repeat if args.repeat <= 2
                      else "median of %d (by req/s)" % args.repeat, "modes": {}}
            for mode in modes:
                picked = {t: _pick(runs[mode][t]) for t in targets}
                every = runs[mode]
                result["modes"][mode] = {
                    **picked, "ratio_c_b": round(picked["c"]["rps"] / picked["b"]["rps"], 3),
                    "cpu_ratio_c_b": round(_median_cpu(every["c"]) / _median_cpu(every["b"]), 2),
                    "same_headers_ratio": round(picked["c"]["rps"] / picked["d"]["rps"], 3),
                    "cpu_ratio_c_d": round(_median_cpu(every["c"]) / _median_cpu(every["d"]), 2),
                    "all_rps": {t: [r["rps"] for r in every[t]] for t in targets},
                    "all_cpu_us_per_req": {t: [r["cpu_us_per_req"] for r in every[t]] for t in targets}}
            result["memory_1_route"] = {"hand": h.haproxy_rss(hand.pid),
                                        "product": h.haproxy_rss(product.haproxy.master_pid)}
            with open(product.haproxy.files.config, encoding="utf-8") as handle:
                product_text = handle.read()
            result["configs"] = {"hand": hand_text, "same_headers": same_text, "product": product_text}
            result["check_ms_1_route"] = _check_ms(product.haproxy, product.haproxy.files.config)
            if args.explain:
                result["explain"] = self.explain(product_text, table, product.settings)
            result["reload_1_route"] = self._reloads(product, swarm, 3 if args.quick else 5)
            return result
        finally:
            product.haproxy.kill()
            self.procs.stop(hand)
            self.procs.stop(same)

    def explain(self, text: str, table, settings: ProxySettings) -> dict:
        """What each piece the product config adds over the hand-written one costs: haproxy (one
        process, one thread) under callgrind, user-space instructions per request while wrk
        runs, for (b), (c), (c) with each piece taken out and with all of them taken out.
        Instruction counts do not move with the other load on the machine; kernel time
        (sockets) is not in them."""
        backend, found = table.routes[0].backend, {}
        hand = {"(b) hand-written": h.hand_config, "(d) hand-written, same headers": h.same_headers_config}
        variants = {**dict.fromkeys(hand), "(c) ingressmesh": [], **{f"(c) without {n}": [n] for n in h.FEATURES},
                    "(c) without all four": list(h.FEATURES)}
        for index, (name, features) in enumerate(variants.items()):
            port = h.free_port()
            if features is None:
                config = hand[name](port, [(a, self.port) for a in SERVERS])
            else:
                config = h.rebind(h.without(text, features, backend, "app.local"),
                                  {settings.http_port: port, settings.stats_port: h.free_port()},
                                  os.path.join(self.workdir, f"explain{index}-admin.sock"))
            found[name] = h.instructions_per_request(self.procs, self.haproxy, self.workdir, f"explain{index}",
                                                     config, port, MODES, self.args.explain_duration)
        summary = {}
        for mode in MODES:
            c = found["(c) ingressmesh"][mode]["instructions_per_req"]
            summary[mode] = {name: {**r[mode], "vs_c": round(r[mode]["instructions_per_req"] / c, 3)}
                             for name, r in found.items()}
            # (d)/(c) instructions: the same-headers ratio without the other load's noise
            summary[mode]["same_headers_ratio"] = round(
                found["(d) hand-written, same headers"][mode]["instructions_per_req"] / c, 3)
        return {"how": "valgrind --tool=callgrind, haproxy -db nbthread 1, wrk -c4; counted only during the run",
                "duration_s": self.args.explain_duration, "modes": summary}

    # -- 2. route changes through the real `ingressmesh proxy` -----------------------------------
    def route_changes(self) -> dict:
        token = secrets.token_hex(16)
        token_file = os.path.join(self.workdir, "token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        controller = h.FakeController(token, nagle=self.args.controller_nagle)
        swarm = self.cluster(tasks=2)
        controller.publish(swarm.to_dict())
        http_port, listen = h.free_port(), h.free_port()
        argv = [sys.executable, "-m", "ingressmesh", "proxy", "--controller", controller.url,
                "--token-file", token_file, "--http-port", str(http_port), "--bind", "127.0.0.1",
                "--stats-port", str(h.free_port()), "--listen", f"127.0.0.1:{listen}",
                "--workdir", os.path.join(self.workdir, "proxy"), "--stop-linger", "0", "--stop-linger-max", "0",
                "--stop-timeout", "5",
                "--proxy-id", "bench-proxy", "--haproxy", self.haproxy]
        log_path = os.path.join(self.workdir, "proxy.log")
        with open(log_path, "wb") as log:
            proxy = self.procs.start(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            _until(lambda: _healthz(listen).get("serving") and h.get(http_port, "app.local")[0] == 200, 30,
                   lambda: f"the proxy did not serve: {h.tail(log_path)}")
            self.procs.extra_pids += [p for p in h.children(proxy.pid) if _comm(p) == "haproxy"]
            result = {"command": shlex.join(argv), "poll_interval_ms": 5, "bound_s": 5,
                      "reference_poll_s": REFERENCE_POLL_S,
                      "reference_note": "documented default poll intervals of those products, not measured here"}
            result["new_host"] = self._host_trials(controller, swarm, http_port, "new", self.args.trials)
            for key, trials in (("new_task", self._task_trials), ("host_alias", self._alias_trials)):
                before = _healthz(listen)
                result[key] = trials(controller, swarm, http_port)
                after = _healthz(listen)
                result[key]["reloads_during"] = after["reloads"] - before["reloads"]
                result[key]["runtime_commands"] = after["runtime_commands"] - before["runtime_commands"]
            result["proxy_rss_mb_small"] = round(h.rss_kb(proxy.pid) / 1024, 1)
            if self.args.routes:
                result["at_scale"] = self._at_scale(controller, swarm, http_port, proxy.pid)
            return result
        except (TimeoutError, OSError, KeyError, ValueError) as err:
            raise RuntimeError(f"{err}; the proxy's log said: {h.problems(log_path)}") from err
        finally:
            self.procs.stop(proxy, timeout=15)
            controller.close()

    def _host_trials(self, controller, swarm: h.Cluster, port: int, prefix: str, trials: int,
                     bound: float = 5.0) -> dict:
        samples = []
        for k in range(trials):
            name, host = f"{prefix}{k}", f"{prefix}{k}.bench.local"
            swarm.service(name, host, self.port).task(f"{name}-0", name)
            started = controller.publish(swarm.to_dict())
            samples.append(_first(lambda: h.get(port, host)[0] == 200, started, f"host {host}", bound))
            time.sleep(0.25)  # the applier spaces reloads 0.2 s apart: measure one change, not a burst
        return _stats(samples)

    def _task_trials(self, controller, swarm: h.Cluster, port: int) -> dict:
        samples = []
        for k in range(self.args.trials):
            task = f"app-extra-{k}"
            address = swarm.task(task, "app")
            started = controller.publish(swarm.to_dict())
            samples.append(_first(lambda: address.encode() in _burst(port, 4), started, f"task {address}"))
            swarm.remove_task(task)
            controller.publish(swarm.to_dict())
            self._synced(controller.version)
            time.sleep(0.05)
        return _stats(samples)

    def _alias_trials(self, controller, swarm: h.Cluster, port: int) -> dict:
        """A host added to an existing service's label (a route to a backend that exists)."""
        samples = []
        for k in range(self.args.trials):
            host = f"alias{k}.bench.local"
            swarm.service("app", f"app.local,{host}", self.port)
            started = controller.publish(swarm.to_dict())
            samples.append(_first(lambda: h.get(port, host)[0] == 200, started, f"host {host}"))
            self._synced(controller.version)
            time.sleep(0.05)
        swarm.service("app", "app.local", self.port)
        controller.publish(swarm.to_dict())
        self._synced(controller.version)
        return _stats(samples)

    def _synced(self, version: int, bound: float = 10) -> None:
        """Until the proxy has applied `version` (its state.json is written after each apply)."""
        path = os.path.join(self.workdir, "proxy", "state.json")

        def applied() -> bool:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle).get("snapshot_version") == version
        _until(applied, bound, lambda: f"the proxy did not apply snapshot {version}")

    def _at_scale(self, controller, swarm: h.Cluster, port: int, proxy_pid: int) -> dict:
        """--routes more services through the running proxy, then new services among them (a
        reload of the whole config each: bounded 15 s, not 5)."""
        self.add_routes(swarm)
        swarm.service("last", "last.bench.local", self.port).task("last-0", "last")  # answers
        last = "last.bench.local"
        started = controller.publish(swarm.to_dict())
        first_ms = _first(lambda: h.get(port, last)[0] == 200, started, f"host {last}", bound=30)
        self._synced(controller.version)
        time.sleep(0.3)
        trials = 3 if self.args.quick else 5
        found = {"routes": self.args.routes, "publish_to_serving_ms": round(first_ms, 1),
                 "new_host": self._host_trials(controller, swarm, port, "late", trials, bound=15.0)}
        time.sleep(0.5)  # old workers leave once their (closed) connections are gone
        master = next((p for p in h.children(proxy_pid) if _comm(p) == "haproxy"), None)
        found["proxy_rss_mb"] = round(h.rss_kb(proxy_pid) / 1024, 1)
        found["haproxy_rss"] = h.haproxy_rss(master) if master else None
        return found

    # -- 3. 1,000 host routes, in process ---------------------------------------------------------
    def routes_at_scale(self) -> dict:
        n, reps = self.args.routes, 3 if self.args.quick else 5
        swarm = self.cluster()
        self.add_routes(swarm)
        data = swarm.to_dict()
        applier = self.applier("scale")
        try:
            times = {"from_dict": [], "plan_routes": [], "slots_and_render_config": [], "render_map": []}
            map_path = os.path.join(self.workdir, "scale", "check.map")
            settings = replace(applier.settings, map_file=map_path)
            for _ in range(reps):
                cluster = _into(times["from_dict"], lambda: snapshot.from_dict(data))
                table = _into(times["plan_routes"], lambda: plan_routes(cluster, options=OPTIONS))
                config = _into(times["slots_and_render_config"],
                               lambda: render_config(table, slots.assign({}, table), settings))
                routes_map = _into(times["render_map"], lambda: render_map(table))
            config_path = os.path.join(self.workdir, "scale", "check.cfg")
            for path, text in ((map_path, routes_map), (config_path, config)):
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(text)
            result = {"routes": len(table.routes), "backends": len(table.backends), "repeats": reps,
                      "median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
                      "config_kb": round(len(config) / 1024), "map_kb": round(len(routes_map) / 1024),
                      "haproxy_check_ms": _check_ms(applier.haproxy, config_path, reps)}
            started = time.perf_counter()
            if applier.apply(table).how != "start":
                raise RuntimeError(f"haproxy did not start on {n} routes: {applier.last_error}")
            result["start_ms"] = _ms(time.perf_counter() - started)
            result["haproxy_rss_after_start"] = h.haproxy_rss(applier.haproxy.master_pid)
            url = f"http://127.0.0.1:{applier.settings.http_port}/"  # app.local among all the routes
            result["throughput"] = {mode: self.wrk(url, close, applier.haproxy.master_pid, self.args.duration)
                                    for mode, close in MODES.items()}
            if self.args.explain:  # does routing cost grow with the routes? (deterministic count)
                with open(applier.haproxy.files.config, encoding="utf-8") as handle:
                    text, port = h.rebind_all(handle.read(), os.path.join(self.workdir, "scale-cg-admin.sock"))
                result["instructions_per_req"] = h.instructions_per_request(
                    self.procs, self.haproxy, self.workdir, "scale-cg", text, port, {"keep-alive": False},
                    self.args.explain_duration)["keep-alive"]["instructions_per_req"]
            result["reload"] = self._reloads(applier, swarm, 3 if self.args.quick else 5)
            time.sleep(0.5)
            result["haproxy_rss_after_reloads"] = h.haproxy_rss(applier.haproxy.master_pid)
            result["haproxy_rss_without_spare_slots"] = self._rss_without_spare_slots(config)
            return result
        finally:
            applier.haproxy.kill()

    def _rss_without_spare_slots(self, config: str) -> dict:
        """The same config without the disabled (spare) server slots: what the pools cost."""
        text = "\n".join(line for line in config.splitlines() if not line.endswith(" disabled weight 0"))
        text, port = h.rebind_all(text + "\n", os.path.join(self.workdir, "slim-admin.sock"))
        proc = h.start_haproxy(self.procs, self.haproxy, self.workdir, "slim", text, "127.0.0.1", port)
        try:
            time.sleep(0.2)
            return h.haproxy_rss(proc.pid)
        finally:
            self.procs.stop(proc)

    def _reloads(self, applier: RouteApplier, swarm: h.Cluster, count: int) -> dict:
        """Add one host, apply: render + check + SIGUSR2 + new worker answering on its socket,
        then the first 200 for the new host."""
        parts = {"apply": [], "check": [], "sigusr2_to_new_worker": [], "first_200_after_apply": [],
                 "old_worker_gone_after_apply": []}
        haproxy = applier.haproxy
        check, reload = haproxy.check, haproxy.reload
        haproxy.check = lambda path: parts["check"].append(_timed(lambda: check(path))[1])
        haproxy.reload = lambda: parts["sigusr2_to_new_worker"].append(_timed(reload)[1])
        try:
            for k in range(count):
                name = f"extra{k}"
                swarm.service(name, f"{name}.bench.local", self.port).task(f"{name}-0", name)
                table = plan_routes(snapshot.from_dict(swarm.to_dict()), options=OPTIONS)
                time.sleep(0.25)  # past the applier's 0.2 s reload spacing
                outcome, elapsed = _timed(lambda: applier.apply(table))
                if outcome.how != "reload":
                    raise RuntimeError(f"expected a reload, got {outcome}")
                parts["apply"].append(elapsed)
                started = time.perf_counter()
                parts["first_200_after_apply"].append(
                    _first(lambda: h.get(applier.settings.http_port, f"{name}.bench.local")[0] == 200, started, name))
                parts["old_worker_gone_after_apply"].append(_first(
                    lambda: len(h.children(haproxy.master_pid)) == 1, started, "old worker exit", bound=30, every=0.02))
        finally:
            haproxy.check, haproxy.reload = check, reload
        return {"count": count, "median_ms": {k: round(statistics.median(v), 1) for k, v in parts.items()},
                "max_ms": {k: round(max(v), 1) for k, v in parts.items()}}


def _median_cpu(results: list[dict]) -> float:
    return max(0.01, statistics.median(r["cpu_us_per_req"] for r in results))


def _pick(results: list[dict]) -> dict:
    ordered = sorted(results, key=lambda r: r["rps"])
    return ordered[-1] if len(ordered) <= 2 else ordered[len(ordered) // 2]


def _timed(func):
    started = time.perf_counter()
    value = func()
    return value, (time.perf_counter() - started) * 1000


def _into(samples: list, func):
    value, elapsed = _timed(func)
    samples.append(elapsed)
    return value


def _check_ms(haproxy: HAProxy, path: str, reps: int = 3) -> float:
    return round(statistics.median(_timed(lambda: haproxy.check(path))[1] for _ in range(reps)), 1)


def _first(ready, started: float, what: str, bound: float = 5.0, every: float = 0.005) -> float:
    """ms from `started` (perf_counter) until ready() is true, polled every 5 ms, bounded."""
    deadline = started + bound
    while True:
        try:
            if ready():
                return (time.perf_counter() - started) * 1000
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not served within {bound:g} s")
        time.sleep(every)


def _until(ready, bound: float, why) -> None:
    deadline = time.monotonic() + bound
    while True:
        try:
            if ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(why())
        time.sleep(0.02)


def _healthz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:  # 503 while not serving: the details still come
        return json.loads(err.read())


def _burst(port: int, count: int) -> bytes:
    """`count` requests to app.local, each on a fresh connection: the bodies name the servers."""
    return b" ".join(h.get(port, "app.local")[1] for _ in range(count))


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


# -- report -----------------------------------------------------------------------------------------
def machine_info(haproxy: str) -> dict:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    version = subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=False).stdout.splitlines()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "python": platform.python_version(),
            "haproxy_version": version[0] if version else "",
            "wrk_version": (wrk.stdout or wrk.stderr).split("\n")[0], "root": os.geteuid() == 0,
            "loadavg_start": os.getloadavg(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def render(results: dict) -> str:
    args, lines = results["parameters"], []
    tp = results.get("throughput")
    if tp:
        lines += [f"L7 data path: wrk -t1 -c{args['connections']} -d{args['duration']:g}s --latency, "
                  f"Host: app.local, {len(SERVERS)} backend servers (HAProxy `return`), {tp['how']}",
                  f"{'mode':<11} {'path':<34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu us/req':>10} "
                  f"{'other %':>7}"]
        names = {"a": "(a) direct to one backend server", "b": "(b) hand-written haproxy config",
                 "c": "(c) ingressmesh-rendered config", "d": "(d) hand-written, same headers"}
        for mode, found in tp["modes"].items():
            for t, name in names.items():
                r = found[t]
                lines.append(f"{mode:<11} {name:<34} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                             f"{r['cpu_us_per_req']:>10.1f} {r['other_cpu_pct']:>7.1f}")
            verdict = "met" if found["ratio_c_b"] >= TARGET else "NOT MET"
            lines.append(f"{mode:<11} {'(c)/(b) req/s':<34} {found['ratio_c_b']:>8.3f}   target >= {TARGET}: {verdict}"
                         f"  (cpu/req (c)/(b) {found['cpu_ratio_c_b']:.2f})")
            if "same_headers_ratio" in found:
                verdict = "met" if found["same_headers_ratio"] >= TARGET else "NOT MET"
                lines.append(f"{mode:<11} {'(c)/(d) req/s same_headers_ratio':<34} {found['same_headers_ratio']:>8.3f}"
                             f"   target >= {TARGET}: {verdict}  (cpu/req (c)/(d) {found['cpu_ratio_c_d']:.2f})")
        lines.append("cpu us/req: on-CPU time of the haproxy serving it (all threads of master + workers; (a): the "
                     "backend server) per request; other %: CPU used meanwhile by processes outside this bench (noise)")
        explain = tp.get("explain")
        if explain:
            lines.append(f"  haproxy user-space instructions per request ({explain['how']})")
            lines.append(f"    {'':<42}" + "".join(f"{mode:>22}" for mode in explain["modes"]))
            for name in (k for k in next(iter(explain["modes"].values())) if k != "same_headers_ratio"):
                lines.append(f"    {name:<42}" + "".join(
                    f"{found[name]['instructions_per_req']:>12,} ({found[name]['vs_c']:>5.2f}x)"
                    for found in explain["modes"].values()))
        if explain and "same_headers_ratio" in next(iter(explain["modes"].values())):
            lines.append("    same_headers_ratio by instructions, (d)/(c): " + ", ".join(
                f"{mode} {found['same_headers_ratio']:.3f}" for mode, found in explain["modes"].items()))
    rc = results.get("route_changes")
    if rc:
        lines.append(f"Route changes through `ingressmesh proxy` (publish -> first answer, polled every 5 ms)")
        for key, label in (("new_host", "new labelled service + host"), ("new_task", "new task of a service"),
                           ("host_alias", "new host, existing service")):
            s = rc[key]
            how = f"{s['reloads_during']} reloads" if "reloads_during" in s else "reload"
            lines.append(f"  {label:<28} p50 {s['p50_ms']:>6.1f} ms  p99 {s['p99_ms']:>6.1f} ms  "
                         f"max {s['max_ms']:>6.1f} ms  ({s['n']} trials; {how})")
        scale = rc.get("at_scale")
        if scale:
            s = scale["new_host"]
            haproxy_mb = scale["haproxy_rss"]["total_mb"] if scale["haproxy_rss"] else "?"
            lines += [f"  with {scale['routes']} more routes: publishing them -> served "
                      f"{scale['publish_to_serving_ms']:.0f} ms; new labelled service + host then p50 "
                      f"{s['p50_ms']:.0f} ms, max {s['max_ms']:.0f} ms ({s['n']} trials)",
                      f"  memory: proxy process {rc['proxy_rss_mb_small']} MB -> {scale['proxy_rss_mb']} MB RSS, "
                      f"its haproxy (master + workers) {haproxy_mb} MB"]
        lines.append("  reference, documented default poll intervals (not measured here): " +
                     ", ".join(f"{k} {v:g} s" for k, v in REFERENCE_POLL_S.items()))
    reload_lines = []
    for label, r in (("1 route", (tp or {}).get("reload_1_route")),
                     (f"{args['routes']} routes", (results.get("routes_at_scale") or {}).get("reload"))):
        if r:
            reload_lines.append(
                f"  seamless reload at {label} (+1 host, {r['count']}x): apply {r['median_ms']['apply']:.0f} ms median "
                f"({r['max_ms']['apply']:.0f} max) = haproxy -c {r['median_ms']['check']:.0f} + SIGUSR2 -> new worker "
                f"answering {r['median_ms']['sigusr2_to_new_worker']:.0f} + render/write; new host's first 200 "
                f"{r['median_ms']['first_200_after_apply']:.1f} ms after apply returns, old worker gone "
                f"{r['median_ms']['old_worker_gone_after_apply']:.0f} ms after")
    small = (tp or {}).get("memory_1_route", {}).get("product", {})
    if reload_lines:
        lines += ["Seamless reloads (RouteApplier in process, one new host each)", *reload_lines]
    sc = results.get("routes_at_scale")
    if sc:
        m = sc["median_ms"]
        lines += [f"{args['routes']} host routes + app.local ({sc['backends']} backends, 2 tasks each, 16 slots each; "
                  f"medians of {sc['repeats']})",
                  f"  from_dict {m['from_dict']:.0f} ms, plan_routes {m['plan_routes']:.0f} ms, slots + render_config "
                  f"{m['slots_and_render_config']:.0f} ms, render_map {m['render_map']:.1f} ms "
                  f"(config {sc['config_kb']} KB, map {sc['map_kb']} KB)",
                  f"  haproxy -c {sc['haproxy_check_ms']:.0f} ms (1 route: "
                  f"{(tp or {}).get('check_ms_1_route', float('nan')):.0f} ms), cold start {sc['start_ms']:.0f} ms",
                  *[f"  (c) with all these routes, {mode}: {r['rps']:.0f} req/s, p99 {r['p99_ms']:.2f} ms, "
                    f"{r['cpu_us_per_req']:.1f} us/req, other {r['other_cpu_pct']:.0f} % (one run; compare with "
                    f"care, see instructions)" for mode, r in sc["throughput"].items()],
                  *([f"  haproxy instructions per request, keep-alive, with all these routes: "
                     f"{sc['instructions_per_req']:,} (1 route: "
                     f"{tp['explain']['modes']['keep-alive']['(c) ingressmesh']['instructions_per_req']:,})"]
                    if "instructions_per_req" in sc and tp and "explain" in tp else []),
                  f"  haproxy master + worker: RSS {sc['haproxy_rss_after_start']['total_mb']} MB "
                  f"(PSS {sc['haproxy_rss_after_start']['pss_total_mb']} MB) after start, RSS "
                  f"{sc['haproxy_rss_after_reloads']['total_mb']} MB after the reloads; 1 route: RSS "
                  f"{small.get('total_mb', '?')} MB (PSS {small.get('pss_total_mb', '?')} MB); without the spare "
                  f"(disabled) server slots: RSS {sc['haproxy_rss_without_spare_slots']['total_mb']} MB"]
    ts = results.get("tls_hosts_at_scale")
    if ts:
        r = ts["snapshot_to_reloaded_ms"]
        lines += [f"{ts['tls_hosts']} TLS hosts (terminated, one wildcard certificate secret, 1 task each)",
                  f"  from_dict {ts['from_dict_ms']:.0f} ms, plan_routes {ts['plan_routes_ms']:.0f} ms, certificates "
                  f"{ts['certs_resolve_ms']:.0f} ms, slots + render {ts['slots_and_render_ms']:.0f} ms (config "
                  f"{ts['config_kb']} KB, crt-list {ts['crt_list_kb']} KB), haproxy -c {ts['haproxy_check_ms']:.0f} ms, "
                  f"first apply (start) {ts['apply_start_ms']:.0f} ms",
                  f"  +1 TLS host, snapshot -> reloaded: median {r['median']:.0f} ms, max {r['max']:.0f} ms "
                  f"({r['count']}x; {r['what']})",
                  f"  haproxy master + worker RSS {ts['haproxy_rss']['total_mb']} MB; planner (this bench) process "
                  f"RSS {ts['planner_process_rss_mb']} MB"]
    lines.append(f"cpu steal during the run: {results['machine'].get('steal_percent', '?')} %, "
                 f"load average at start {results['machine']['loadavg_start'][0]:.1f}")
    for failure in results["failures"]:
        lines.append(f"FAILED: {failure}")
    return "\n".join(lines)


def _interrupted(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (5; --quick 2)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="wrk runs per measurement: 2 = best of 2, 3+ = median")
    parser.add_argument("--trials", type=int, help="route-change trials of each kind (20; --quick 8)")
    parser.add_argument("--routes", type=int, default=1000, help="host routes for the scale test (0: skip)")
    parser.add_argument("--tls-hosts", type=int, default=10000, help="TLS hosts for the TLS scale row (0: skip)")
    parser.add_argument("--explain", action="store_true",
                        help="also count haproxy's instructions per request (callgrind) for the product config "
                             "with each piece it adds taken out (needs valgrind; about 1 min more)")
    parser.add_argument("--explain-duration", type=int, default=2, help="seconds per --explain wrk run")
    parser.add_argument("--controller-nagle", action="store_true",
                        help="the stand-in controller's sockets without TCP_NODELAY, like the real controller's")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 5)
    args.trials = args.trials or (8 if args.quick else 20)
    if min(args.repeat, args.connections, args.duration, args.explain_duration) < 1 \
            or not 1 <= args.trials <= MAX_TRIALS:
        parser.error(f"--repeat, --connections, --duration, --explain-* must be >= 1, --trials 1-{MAX_TRIALS}")
    if not 0 <= args.routes <= 20000 or not 0 <= args.tls_hosts <= 20000:
        parser.error("--routes, --tls-hosts: 0 (skip) to 20000")
    tools = ("wrk", "haproxy", *(("valgrind",) if args.explain else ()), *(("openssl",) if args.tls_hosts else ()))
    missing = [tool for tool in tools if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing:
        print(f"needs {' and '.join(missing)} (Debian: apt-get install {' '.join(missing)})", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupted)  # so the finally blocks stop what was started
    procs, workdir = h.Processes(), tempfile.mkdtemp(prefix="ingressmesh-l7-bench-")
    bench = Bench(args, procs, workdir)
    results = {"machine": machine_info(bench.haproxy), "parameters": dict(vars(args)), "target_ratio": TARGET,
               "wrk_commands": {mode: shlex.join(h.wrk_argv("http://127.0.0.1:PORT/", args.connections,
                                                            args.duration, close)) for mode, close in MODES.items()},
               "failures": []}
    stat_before, started = h.cpu_stat(), time.monotonic()
    try:
        backends = h.start_haproxy(procs, bench.haproxy, workdir, "backends",
                                   h.backend_config(LIVE, bench.port), SERVERS[0], bench.port)
        results["backend_servers"] = {"addresses": f"{LIVE[0]}-{LIVE[-1]}", "app.local": SERVERS,
                                      "port": bench.port, "kind": "one haproxy (nbthread 1), "
                                      "http-request return 200 with the address as the body"}
        bench.backends_pid = backends.pid
        tls_scale = (lambda: tls_hosts_at_scale(args.tls_hosts, workdir, bench.haproxy, bench.port,
                                                2 if args.quick else 3)) if args.tls_hosts else None
        for key, run in (("throughput", bench.throughput),
                         ("route_changes", bench.route_changes),
                         ("routes_at_scale", bench.routes_at_scale if args.routes else None),
                         ("tls_hosts_at_scale", tls_scale)):
            if run is None:
                continue
            try:
                results[key] = run()
            except Exception as err:  # noqa: BLE001 - one failed measurement must not hide the others
                results["failures"].append(f"{key}: {type(err).__name__}: {err}")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return h.finish(results, args.out, render, stat_before, started)


if __name__ == "__main__":
    h.run_main(main)
