"""L7 TLS benchmark: what terminating TLS costs through the config ingressmesh renders, against a
hand-written HAProxy config with the same certificates and backends, and whether a certificate
rotation and route reloads under load fail any request.  All on loopback.

    .venv/bin/python bench/l7_tls.py [--quick] [--duration 3] [--repeat 5] [--out bench/results/l7_tls.json]

1. Certificates: a throw-away CA and EC P-256 leaves (ingressmesh.testbed.pki) for app.local and
   shop.local, put into a secrets directory as Docker mounts secrets (`<host>_cert_v1`, ...).
2. Two HAProxies on the same backend servers (one HAProxy `http-request return` on 127.0.0.2-7):
   (b) a hand-written minimal config: one `bind ... ssl crt-list` frontend, `use_backend` by Host;
   (c) what the product runs: plan_routes on a cluster whose services carry ssl_cert/ssl_key
   labels -> RouteApplier + HAProxy with an HTTPS port (certificates checked and written by
   certs.CertStore, crt-list by render_tls).
3. Alternating (b) and (c), --repeat rounds, medians and spread, for three loads:
   keep-alive   HTTPS requests on kept connections (wrk -t1 -c16);
   resumed      a new TLS connection per request (wrk -H 'Connection: close'; wrk keeps its TLS
                session, so these are TLS 1.3 resumptions: PSK + ECDHE, no certificate sent);
   full         a new TLS connection per request with a full handshake (4 client threads in this
                process, no session reuse; the client costs more CPU than HAProxy here).
   Handshake kinds are counted by HAProxy itself (frontend ssl_sess / ssl_reused_sess).
   wrk sends the URL's host (127.0.0.1) as SNI, which matches no crt-list line: both configs
   then serve their first line, app.local's certificate (checked); the Python client sends SNI.
4. Reloads under load ((c) only): while a client process (4 threads) opens new verified TLS
   connections to app.local and wrk keeps 4 connections alive, app.local's labels move to a new
   secret pair (a reload with a new crt-list), then 5 route reloads add/remove a third TLS host.
   Failed requests are counted (target 0); the new certificate (subject O) must be served after.
   Three phases with the config the product renders (its HTTP frontends carry `option
   idle-close-on-response`, so an old worker answers a request already on an idle keep-alive
   connection before closing it).
Exits 1 only if a measurement failed; a target not met is reported, not an exit status.
Needs haproxy, wrk, openssl; no root.  Every process it starts is stopped by PID.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import l7_helpers as h  # noqa: E402  (bench/ is not a package)
from l7 import OPTIONS, machine_info  # noqa: E402
from ingressmesh import snapshot  # noqa: E402
from ingressmesh.l7 import runtime  # noqa: E402
from ingressmesh.l7.applier import RouteApplier  # noqa: E402
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles  # noqa: E402
from ingressmesh.l7.render import ProxySettings  # noqa: E402
from ingressmesh.l7.routes import plan_routes  # noqa: E402
from ingressmesh.testbed.pki import Pki  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "l7_tls.json")
TARGET = 0.95
# app.local is the host wrk sends (l7_helpers.wrk_argv); it sorts first, so its certificate is
# also the crt-list's first line: the one served to wrk, whose SNI is the URL's 127.0.0.1.
HOSTS = {"app.local": [f"127.0.0.{i}" for i in range(2, 6)], "shop.local": ["127.0.0.6", "127.0.0.7"]}
EXTRA = ("extra.local", "127.0.0.8")  # the host the route reloads add and remove
LIVE = [a for addresses in HOSTS.values() for a in addresses] + [EXTRA[1]]
CONNECTIONS = 16
CLIENT_THREADS = 4
MAX_PER_THREAD = 100_000  # every client loop is bounded in count as well as in time
CLIENT_MAX_S = 60  # the rotation's client process stops by itself after this
ROUNDS = 3  # rotation phases (--quick: 1), each 1 rotation + 5 route reloads
WRK_BOUND_S = 60  # the rotation's wrk is stopped (SIGINT) when the changes are done; at most this
MODES = {"keep-alive": "HTTPS keep-alive requests (wrk -t1 -c16)",
         "resumed": "new TLS connection per request, session resumed (wrk -c16 -H 'Connection: close')",
         "full": f"new TLS connection per request, full handshake ({CLIENT_THREADS} Python client threads)"}

HAND_CONFIG = """global
    stats socket {admin} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s

frontend https
    bind 127.0.0.1:{port} ssl crt-list {crt_list} alpn h2,http/1.1
{rules}

{backends}
"""


def hand_config(port: int, crt_list: str, admin: str, backend_port: int) -> str:
    """(b): the same certificates by SNI, the same backends by Host.  The stats socket is only
    read by the bench (handshake counters)."""
    names = {host: host.split(".")[0] for host in HOSTS}
    rules = "\n".join(f"    use_backend {names[host]} if {{ hdr(host) -i {host} }}" for host in HOSTS)
    backends = "\n\n".join(
        f"backend {names[host]}\n    balance roundrobin\n" +
        "\n".join(f"    server s{i + 1} {h.loopback(a)}:{int(backend_port)}" for i, a in enumerate(addresses))
        for host, addresses in HOSTS.items())
    return HAND_CONFIG.format(admin=admin, port=int(port), crt_list=crt_list, rules=rules, backends=backends)


def ssl_counters(admin_socket: str, frontend: str = "https") -> dict:
    """Full (ssl_sess) and resumed (ssl_reused_sess) handshakes of a frontend, from `show stat
    typed` (all threads of the worker answering the socket)."""
    fields: dict[str, dict[str, str]] = {}
    for line in runtime.send(admin_socket, "show stat typed").splitlines():
        found = re.match(r"^F\.(\d+)\.0\.\d+\.(\w+)\.\d+:[^:]*:[^:]*:(.*)$", line)
        if found:
            fields.setdefault(found.group(1), {})[found.group(2)] = found.group(3)
    for values in fields.values():
        if values.get("pxname") == frontend:
            return {"full": int(values.get("ssl_sess", 0)), "resumed": int(values.get("ssl_reused_sess", 0))}
    raise RuntimeError(f"no frontend {frontend!r} in show stat on {admin_socket}")


def subject_o(tls: ssl.SSLSocket) -> str:
    for rdn in tls.getpeercert().get("subject", ()):
        for key, value in rdn:
            if key == "organizationName":
                return value
    return ""


def tls_connect(port: int, host: str, context: ssl.SSLContext, sni: bool = True) -> ssl.SSLSocket:
    """A new TLS connection to the proxy on loopback (SNI `host` unless `sni` is False)."""
    sock = socket.create_connection((h.loopback("127.0.0.1"), port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname=host if sni else None)
    except Exception:
        sock.close()
        raise


def tls_request(port: int, host: str, context: ssl.SSLContext, sni: bool = True) -> tuple[bytes, str, bool]:
    """One GET on a new TLS connection: (response, the certificate's subject O, whether the
    session was resumed).  The subject is only known when `context` verifies."""
    with tls_connect(port, host, context, sni) as tls:
        presented, resumed = subject_o(tls), tls.session_reused  # before the server closes it
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        for _ in range(1000):  # bounded; the server closes after one response
            data = tls.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks), presented, bool(resumed)


def status_of(response: bytes) -> int:
    found = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(found.group(1)) if found else 0


def served_o(port: int, host: str, context: ssl.SSLContext, sni: bool = True) -> str:
    """The subject O of the certificate served for `host` (a verifying `context`)."""
    with tls_connect(port, host, context, sni) as tls:
        return subject_o(tls)


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


class TlsBench:
    def __init__(self, args, procs: h.Processes, workdir: str):
        self.args, self.procs, self.workdir = args, procs, workdir
        self.haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.port = h.free_port()  # every backend server listens here, at its own address
        self.secrets = os.path.join(workdir, "secrets")
        self.pki = Pki(os.path.join(workdir, "pki"))
        self.leaves: dict[tuple[str, str], tuple[str, str]] = {}
        self.pids: set[int] = set()  # haproxy masters of this bench (for the "other CPU" figure)

    # -- certificates as Docker secrets ---------------------------------------------------------
    def secret_pair(self, host: str, version: str) -> dict:
        """Secrets `<host>_cert_<version>` / `<host>_key_<version>`; the labels naming them."""
        cert, key = self.pki.leaf(f"{host}-{version}", host, org=f"{host} {version}")
        self.leaves[host, version] = cert, key
        os.makedirs(self.secrets, mode=0o700, exist_ok=True)
        names = {"ssl_cert": f"{host}_cert_{version}", "ssl_key": f"{host}_key_{version}"}
        for label, source in (("ssl_cert", cert), ("ssl_key", key)):
            shutil.copyfile(source, os.path.join(self.secrets, names[label]))
        return {f"com.docker.lb.{k}": v for k, v in names.items()}

    def cluster(self, labels: dict) -> h.Cluster:
        swarm = h.Cluster(LIVE)
        for host, addresses in HOSTS.items():
            name = host.split(".")[0]
            swarm.service(name, host, self.port)
            swarm.services[name]["labels"].update(labels[host])
            for i, address in enumerate(addresses):
                swarm.task(f"{name}-{i}", name, address)
        return swarm

    def table(self, swarm: h.Cluster):
        return plan_routes(snapshot.from_dict(swarm.to_dict()), options=OPTIONS)

    # -- (b) and (c) ----------------------------------------------------------------------------
    def start_hand(self) -> dict:
        directory = os.path.join(self.workdir, "hand")
        os.makedirs(directory, mode=0o700)
        lines = []
        for host in sorted(HOSTS):  # the order the product's crt-list has (by host)
            cert, key = self.leaves[host, "v1"]
            pem = os.path.join(directory, f"{host}.pem")
            with open(os.open(pem, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="ascii") as handle:
                for source in (cert, key):
                    with open(source, encoding="ascii") as part:
                        handle.write(part.read())
            lines.append(f"{pem} {host}\n")
        crt_list = os.path.join(directory, "crt-list")
        with open(crt_list, "w", encoding="ascii") as handle:
            handle.writelines(lines)
        port, admin = h.free_port(), os.path.join(directory, "admin.sock")
        text = hand_config(port, crt_list, admin, self.port)
        proc = h.start_haproxy(self.procs, self.haproxy, self.workdir, "hand", text, "127.0.0.1", port)
        self.pids.add(proc.pid)
        return {"port": port, "master": proc.pid, "admin": admin, "config": text, "proc": proc}

    def start_product(self, table) -> tuple[RouteApplier, dict]:
        directory = os.path.join(self.workdir, "product")
        os.makedirs(directory, mode=0o700)
        settings = ProxySettings(http_port=h.free_port(), https_port=h.free_port(), bind_address="127.0.0.1",
                                 stats_port=h.free_port(), admin_socket=os.path.join(directory, "admin.sock"),
                                 proxy_id="bench", secrets_dir=self.secrets)
        applier = RouteApplier(HAProxy(HAProxyFiles(directory), binary=self.haproxy), settings)
        log = os.path.join(self.workdir, "product.log")
        with h.stderr_to(log):
            result = applier.apply(table)
        if result.how != "start" or result.table.refused:
            raise RuntimeError(f"product haproxy did not start: {result} {applier.last_error}: {h.problems(log)}")
        self.pids.add(applier.haproxy.master_pid)
        with open(applier.haproxy.files.config, encoding="utf-8") as handle:
            text = handle.read()
        return applier, {"port": settings.https_port, "master": applier.haproxy.master_pid,
                         "admin": settings.admin_socket, "config": text}

    def check_served(self, target: dict) -> dict:
        """Each host answers 200 with its own certificate; without SNI (as wrk to 127.0.0.1) the
        crt-list's first one, app.local's."""
        context = ssl.create_default_context(cafile=self.pki.cert)
        context.check_hostname = False
        found = {}
        for host in HOSTS:
            response, presented, _ = tls_request(target["port"], host, context)
            found[host] = {"status": status_of(response), "subject_o": presented}
            if found[host] != {"status": 200, "subject_o": f"{host} v1"}:
                raise RuntimeError(f"{host} through port {target['port']}: {found[host]}")
        found["no SNI"] = {"subject_o": served_o(target["port"], "app.local", context, sni=False)}
        if found["no SNI"]["subject_o"] != "app.local v1":
            raise RuntimeError(f"without SNI port {target['port']} serves {found['no SNI']}")
        return found

    # -- loads ---------------------------------------------------------------------------------
    def full_handshakes(self, port: int, duration: float) -> dict:
        """CLIENT_THREADS threads, each a loop of new TLS connections (full handshakes: Python
        never reuses a session unless asked), one GET each; bounded by time and count."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # wrk does not verify either
        latencies, counts, errors, lock = [], {"ok": 0, "failed": 0, "resumed": 0}, [], threading.Lock()
        started = time.perf_counter()
        end = started + duration

        def loop():
            mine, ok, failed, resumed = [], 0, 0, 0
            for _ in range(MAX_PER_THREAD):
                begin = time.perf_counter()
                if begin >= end:
                    break
                try:
                    response, _, reused = tls_request(port, "app.local", context)
                    resumed += reused
                    if status_of(response) == 200:
                        ok += 1
                        mine.append((time.perf_counter() - begin) * 1000)
                    else:
                        failed += 1
                except (OSError, ssl.SSLError) as err:
                    failed += 1
                    errors.append(repr(err))
            with lock:
                latencies.extend(mine)
                counts["ok"] += ok
                counts["failed"] += failed
                counts["resumed"] += resumed

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(CLIENT_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(duration + 30)
        elapsed = time.perf_counter() - started
        if counts["failed"] or any(t.is_alive() for t in threads):
            raise RuntimeError(f"full handshakes: {counts['failed']} failed ({errors[:3]})")
        ordered = sorted(latencies)
        return {"rps": round(counts["ok"] / elapsed, 1), "requests": counts["ok"], "client_resumed": counts["resumed"],
                "p50_ms": round(_percentile(ordered, 0.5), 2), "p99_ms": round(_percentile(ordered, 0.99), 2),
                "command": f"{CLIENT_THREADS} threads: new TLS connection (SNI app.local, no session reuse), "
                           f"GET / Host: app.local, Connection: close; {duration:g} s"}

    def run(self, target: dict, mode: str, duration: int) -> dict:
        """One measurement, with HAProxy's CPU per request, handshakes by kind, and the CPU
        processes outside this bench used meanwhile (noise)."""
        master = target["master"]
        counters = ssl_counters(target["admin"])
        before, stat = h.cpu_ns(master), h.cpu_stat()
        own = h.own_ns() + sum(map(h.cpu_ns, self.pids))
        client = h.own_ns()
        if mode == "full":
            result = self.full_handshakes(target["port"], duration)
        else:
            argv = h.wrk_argv(f"https://127.0.0.1:{target['port']}/", CONNECTIONS, duration, mode == "resumed")
            result = {**h.run_wrk(argv, duration), "command": shlex.join(argv)}
        client = h.own_ns() - client
        used = h.cpu_ns(master) - before
        own = h.own_ns() + sum(map(h.cpu_ns, self.pids)) - own
        after = ssl_counters(target["admin"])
        requests = max(1, result["requests"])
        return {**result, "cpu_us_per_req": round(used / 1000 / requests, 1),
                "client_cpu_us_per_req": round(client / 1000 / requests, 1),
                "handshakes_full": after["full"] - counters["full"],
                "handshakes_resumed": after["resumed"] - counters["resumed"],
                "other_cpu_pct": h.other_percent(stat, h.cpu_stat(), own)}

    def throughput(self, hand: dict, product: dict) -> dict:
        args, targets = self.args, {"b": hand, "c": product}
        for target in targets.values():  # warm-up, not counted
            h.run_wrk(h.wrk_argv(f"https://127.0.0.1:{target['port']}/", CONNECTIONS, 1, False), 1)
        runs = {mode: {"b": [], "c": []} for mode in MODES}
        for rep in range(args.repeat):
            for mode in MODES:  # interleaved, b/c order alternating: drift hits both
                for t in ("b", "c") if rep % 2 == 0 else ("c", "b"):
                    runs[mode][t].append(self.run(targets[t], mode, args.duration))
        result = {"how": f"median of {args.repeat} runs each, (b) and (c) alternating", "modes": {}}
        for mode in MODES:
            every = runs[mode]
            rps = {t: [r["rps"] for r in every[t]] for t in every}
            cpu = {t: [r["cpu_us_per_req"] for r in every[t]] for t in every}
            paired = [round(c / b, 3) for b, c in zip(rps["b"], rps["c"])]
            result["modes"][mode] = {
                "what": MODES[mode],
                **{t: {"rps_median": round(statistics.median(rps[t]), 1), "rps_min": min(rps[t]),
                       "rps_max": max(rps[t]), "cpu_us_per_req_median": round(statistics.median(cpu[t]), 1),
                       "p99_ms_median": round(statistics.median(r["p99_ms"] for r in every[t]), 2),
                       "client_cpu_us_per_req_median": round(statistics.median(
                           r["client_cpu_us_per_req"] for r in every[t]), 1),
                       "handshakes_full": sum(r["handshakes_full"] for r in every[t]),
                       "handshakes_resumed": sum(r["handshakes_resumed"] for r in every[t]),
                       "other_cpu_pct_median": round(statistics.median(r["other_cpu_pct"] for r in every[t]), 1)}
                   for t in every},
                "ratio_c_b": round(statistics.median(rps["c"]) / statistics.median(rps["b"]), 3),
                "paired_ratios": paired, "paired_ratio_median": round(statistics.median(paired), 3),
                "cpu_ratio_c_b": round(statistics.median(cpu["c"]) / max(0.01, statistics.median(cpu["b"])), 2),
                "runs": every}
        return result

    # -- rotation and reloads under load -------------------------------------------------------
    def rotation(self, applier: RouteApplier, swarm: h.Cluster, extra_labels: dict, version: str) -> dict:
        """Rotation of app.local to `version`, then 5 route reloads, while a client process opens
        new verified TLS connections and wrk keeps 4 alive.  The clients run in their own
        process, as they would against a real proxy: in this one they would hold the GIL the
        applier needs."""
        port = applier.settings.https_port
        context = ssl.create_default_context(cafile=self.pki.cert)
        rotated = self.secret_pair("app.local", version)  # made now; naming it in the labels is the rotation
        client = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", str(port), "app.local",
                                   self.pki.cert], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        wrk, kept, changes = None, None, []
        try:
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("the rotation client did not start")
            wrk = _wrk_start(port)
            started = time.monotonic()
            time.sleep(1.0)
            swarm.services["app"]["labels"].update(rotated)
            changes.append(self._apply(applier, swarm, f"rotate app.local to secrets app.local_*_{version}", started))
            for _ in range(5):
                time.sleep(0.25)  # past the applier's 0.2 s reload spacing
                changes.append(self._apply(applier, swarm, self._toggle_extra(swarm, extra_labels), started))
            time.sleep(1.0)
            window = time.monotonic() - started
        finally:
            if wrk is not None:
                kept = _wrk_stop(wrk)
            try:
                seen_text, _ = client.communicate(input="", timeout=60)  # EOF on its stdin: stop
            except subprocess.TimeoutExpired:
                client.kill()
                seen_text, _ = client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"the rotation client exited {client.returncode}")
        seen = [(t - started, o, e) for t, o, e in json.loads(seen_text)]
        rotated_at = changes[0]["done_s"]
        failed = [s for s in seen if s[2]]
        versions: dict[str, int] = {}
        for _, o, error in seen:
            if not error:
                versions[o] = versions.get(o, 0) + 1
        after = {host: served_o(port, host, context) for host in HOSTS}
        if after != {"app.local": f"app.local {version}", "shop.local": "shop.local v1"}:
            raise RuntimeError(f"after the rotation to {version} the proxy serves {after}")
        return {
            "new_connections": {"requests": len(seen), "failed": len(failed),
                                "first_failures": [f"{t:.3f}s {e}" for t, _, e in failed[:5]],
                                "versions_seen": versions,
                                "old_version_on_connections_started_after_rotation": sum(
                                    1 for t, o, e in seen if not e and o != f"app.local {version}" and t > rotated_at),
                                "how": f"a client process, {CLIENT_THREADS} threads, new verified TLS connection "
                                       "per request (SNI app.local), GET, 200 expected"},
            "keep_alive_wrk": kept, "changes": changes, "window_s": round(window, 2), "served_after": after}

    def reloads_under_load(self, applier: RouteApplier, swarm: h.Cluster, extra_labels: dict) -> dict:
        """The rotation phase ROUNDS times with the config the product renders."""
        phases, version = [], 1
        for _ in range(1 if self.args.quick else ROUNDS):
            self._apply(applier, swarm, self._toggle_extra(swarm, extra_labels), time.monotonic())
            time.sleep(0.3)
            version += 1
            phases.append({"variant": "product", **self.rotation(applier, swarm, extra_labels, f"v{version}")})
        total = {
            "reloads": sum(len(p["changes"]) for p in phases),
            "requests": sum(p["new_connections"]["requests"] + p["keep_alive_wrk"]["requests"] for p in phases),
            "new_connection_failures": sum(p["new_connections"]["failed"] for p in phases),
            "keep_alive_failures": sum(p["keep_alive_wrk"]["socket_errors"] + p["keep_alive_wrk"]["non_2xx"]
                                       for p in phases)}
        total["failed"] = total["new_connection_failures"] + total["keep_alive_failures"]
        return {"phases": phases, "totals": {"product": total}, "target_failed": 0}

    def _toggle_extra(self, swarm: h.Cluster, extra_labels: dict) -> str:
        """Adds the extra TLS host (its own service, task and certificate) or removes it."""
        if "extra" in swarm.services:
            swarm.services.pop("extra")
            swarm.remove_task("extra-0")
            return f"remove host {EXTRA[0]}"
        swarm.service("extra", EXTRA[0], self.port)
        swarm.services["extra"]["labels"].update(extra_labels)
        swarm.task("extra-0", "extra", EXTRA[1])
        return f"add host {EXTRA[0]} (TLS)"

    def _apply(self, applier: RouteApplier, swarm: h.Cluster, what: str, started: float) -> dict:
        begin = time.monotonic()
        result = applier.apply(self.table(swarm))
        done = time.monotonic()
        if result.how != "reload" or result.table.refused:
            raise RuntimeError(f"{what}: expected a reload, got {result.how} ({result.error or result.table.refused})")
        return {"change": what, "how": result.how, "apply_ms": round((done - begin) * 1000, 1),
                "done_s": round(done - started, 3)}

    def main(self) -> dict:
        results = {}
        labels = {host: self.secret_pair(host, "v1") for host in HOSTS}
        extra_labels = self.secret_pair(EXTRA[0], "v1")
        backends = h.start_haproxy(self.procs, self.haproxy, self.workdir, "backends",
                                   h.backend_config(LIVE, self.port), LIVE[0], self.port)
        self.pids.add(backends.pid)
        results["backend_servers"] = {**{host: a for host, a in HOSTS.items()}, "port": self.port,
                                      "kind": "one haproxy (nbthread 1), http-request return 200"}
        swarm = self.cluster(labels)
        hand = self.start_hand()
        applier, product = self.start_product(self.table(swarm))
        try:
            results["served"] = {"b": self.check_served(hand), "c": self.check_served(product)}
            results["configs"] = {"hand": hand["config"], "product": product["config"]}
            with open(os.path.join(applier.haproxy.files.workdir, f"crt-list-{applier.generation}"),
                      encoding="ascii") as handle:
                results["product_crt_list"] = handle.read().replace(applier.haproxy.files.workdir, "<workdir>")
            results["throughput"] = self.throughput(hand, product)
            self.procs.stop(hand["proc"])  # the rotation runs alone
            self.pids.discard(hand["master"])
            results["reloads_under_load"] = self.reloads_under_load(applier, swarm, extra_labels)
        finally:
            applier.haproxy.kill()
        return results


def _wrk_start(port: int) -> subprocess.Popen:
    """wrk -t1 -c4 keep-alive until _wrk_stop (SIGINT; at most WRK_BOUND_S)."""
    argv = h.wrk_argv(f"https://127.0.0.1:{port}/", 4, WRK_BOUND_S, False)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.argv = argv
    return proc


def _wrk_stop(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGINT)  # wrk stops and prints what it saw
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {err[-300:]}")
    found = h.parse_wrk(out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": found["requests"], "socket_errors": found["socket_errors"], "non_2xx": found["non_2xx"],
            "socket_errors_by_kind": dict(zip(("connect", "read", "write", "timeout"),
                                              map(int, errors.groups()))) if errors else {},
            "command": shlex.join(proc.argv) + " (stopped by SIGINT)"}


def rotation_client(port: int, host: str, cafile: str) -> int:
    """The rotation's client process: CLIENT_THREADS loops of new verified TLS connections to
    `host` until its stdin closes (or CLIENT_MAX_S); prints [[monotonic start, subject O,
    error or ""], ...] as JSON."""
    context = ssl.create_default_context(cafile=cafile)  # verifies the chain and the host name
    stop, lock, seen = threading.Event(), threading.Lock(), []

    def loop():
        mine = []
        for _ in range(MAX_PER_THREAD):
            if stop.is_set():
                break
            begin = time.monotonic()
            try:
                response, presented, _ = tls_request(port, host, context)
                code = status_of(response)
                mine.append((begin, presented, "" if code == 200 else f"HTTP {code}"))
            except (OSError, ssl.SSLError) as err:
                mine.append((begin, "", repr(err)))
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    select.select([sys.stdin], [], [], CLIENT_MAX_S)  # the bench closes stdin when done
    stop.set()
    for thread in threads:
        thread.join(30)
    json.dump(sorted(seen), sys.stdout)
    return 0


# -- report -------------------------------------------------------------------------------------
def render(results: dict) -> str:
    lines, args = [], results["parameters"]
    tp = results.get("throughput")
    if tp:
        lines += [f"L7 TLS: (b) hand-written HAProxy config vs (c) ingressmesh-rendered, same certificates "
                  f"(EC P-256) and backends; {tp['how']}, {args['duration']} s each",
                  f"{'load':<10} {'path':<16} {'req/s median':>12} {'min-max':>15} {'p99 ms':>7} "
                  f"{'cpu us/req':>10} {'client us':>9} {'full/resumed hs':>17} {'other %':>7}"]
        for mode, found in tp["modes"].items():
            for t, name in (("b", "(b) hand-written"), ("c", "(c) ingressmesh")):
                r = found[t]
                lines.append(f"{mode:<10} {name:<16} {r['rps_median']:>12.0f} "
                             f"{r['rps_min']:>7.0f}-{r['rps_max']:<7.0f} {r['p99_ms_median']:>7.2f} "
                             f"{r['cpu_us_per_req_median']:>10.1f} {r['client_cpu_us_per_req_median']:>9.1f} "
                             f"{r['handshakes_full']:>8}/{r['handshakes_resumed']:<8} {r['other_cpu_pct_median']:>7.1f}")
            verdict = "met" if found["ratio_c_b"] >= TARGET else "NOT MET"
            lines.append(f"{mode:<10} {'(c)/(b)':<16} {found['ratio_c_b']:>12.3f}   target >= {TARGET}: {verdict}; "
                         f"paired per round median {found['paired_ratio_median']:.2f}, "
                         f"{min(found['paired_ratios']):.2f}-{max(found['paired_ratios']):.2f}; "
                         f"cpu/req (c)/(b) {found['cpu_ratio_c_b']:.2f}")
        lines += ["  " + f"{mode}: {what}" for mode, what in MODES.items()]
        lines.append("  cpu us/req: on-CPU time of that haproxy (master + workers, all threads) per request; client us: "
                     "this process + wrk per request; full/resumed hs: handshakes HAProxy counted over all runs; "
                     "other %: CPU used meanwhile by processes outside this bench")
    rul = results.get("reloads_under_load")
    if rul:
        lines.append("Reloads under load ((c) only): per phase, a client process opens new verified TLS connections "
                     f"({CLIENT_THREADS} threads) and wrk -c4 keeps connections alive, while app.local's labels move to "
                     "a new secret pair, then 5 route reloads add/remove extra.local (TLS)")
        for phase in rul["phases"]:
            nc, ka = phase["new_connections"], phase["keep_alive_wrk"]
            lines.append(f"  {phase['variant']:<42} {len(phase['changes'])} reloads (apply "
                         f"{min(c['apply_ms'] for c in phase['changes']):.0f}-{max(c['apply_ms'] for c in phase['changes']):.0f} ms): "
                         f"new connections {nc['failed']} failed of {nc['requests']}, certificates {nc['versions_seen']}, "
                         f"old one after the rotation {nc['old_version_on_connections_started_after_rotation']}; "
                         f"keep-alive {ka['socket_errors'] + ka['non_2xx']} failed of {ka['requests']} "
                         f"{ka['socket_errors_by_kind'] or ''}")
            lines += [f"    failure: {f}" for f in nc["first_failures"]]
        for variant, t in rul["totals"].items():
            verdict = "met" if t["failed"] == 0 else "NOT MET"
            lines.append(f"  {variant:<42} all {t['reloads']} reloads: {t['failed']} of {t['requests']} requests failed "
                         f"({t['new_connection_failures']} new-connection, {t['keep_alive_failures']} keep-alive); "
                         f"target 0: {verdict}")
    m = results["machine"]
    lines.append(f"{m['nproc']} cores, {m['haproxy_version']}, {m.get('openssl', '')}; cpu steal "
                 f"{m.get('steal_percent', '?')} %, load average at start {m['loadavg_start'][0]:.1f}")
    lines += [f"FAILED: {failure}" for failure in results["failures"]]
    return "\n".join(lines)


def _interrupted(*_):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 s runs, 3 rounds (about 30 s)")
    parser.add_argument("--duration", type=int, help="seconds per run (3; --quick 1)")
    parser.add_argument("--repeat", type=int, help="rounds of (b) and (c) per load, medians taken (5; --quick 3)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--client", nargs=3, metavar=("PORT", "HOST", "CAFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return rotation_client(int(args.client[0]), args.client[1], args.client[2])
    args.duration = args.duration or (1 if args.quick else 3)
    args.repeat = args.repeat or (3 if args.quick else 5)
    if not (1 <= args.duration <= 60 and 1 <= args.repeat <= 20):
        parser.error("--duration 1-60, --repeat 1-20")
    missing = [t for t in ("wrk", "haproxy", "openssl") if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        print(f"needs {' and '.join(missing)} (Debian: apt-get install {' '.join(missing)})", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupted)  # so the finally blocks stop what was started
    procs, workdir = h.Processes(), tempfile.mkdtemp(prefix="ingressmesh-l7-tls-bench-")
    results = {"parameters": dict(vars(args)), "target_ratio": TARGET, "failures": []}
    stat_before, started = h.cpu_stat(), time.monotonic()
    try:
        bench = TlsBench(args, procs, workdir)
        results["machine"] = machine_info(bench.haproxy)
        found = re.search(r"Running on OpenSSL version : (.*)", subprocess.run(
            [bench.haproxy, "-vv"], capture_output=True, text=True, check=False).stdout)
        results["machine"]["openssl"] = found.group(1).strip() if found else ""
        results.update(bench.main())
    except Exception as err:  # noqa: BLE001 - report what was measured, and why the rest was not
        results["failures"].append(f"{type(err).__name__}: {err}")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results.setdefault("machine", {"nproc": os.cpu_count(), "haproxy_version": "", "loadavg_start": os.getloadavg()})
    return h.finish(results, args.out, render, stat_before, started)


if __name__ == "__main__":
    h.run_main(main)
