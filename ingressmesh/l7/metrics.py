"""The proxy's own Prometheus series; `/metrics` appends HAProxy's exporter (per frontend,
backend and server request/error counters) so one scrape sees both."""
from __future__ import annotations

import urllib.request

from prometheus_client import Counter, Gauge, Histogram

from ..daemon.metrics import _SYNC_BUCKETS, _Metrics
from .acme_status import MAX_HOSTS, error_kind


class ProxyMetrics(_Metrics):
    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.snapshot_version = Gauge("ingressmesh_l7_snapshot_version", "Snapshot the routes come from.", registry=r)
        self.config_generation = Gauge("ingressmesh_l7_config_generation", "Config generation HAProxy runs.", registry=r)
        self.reloads = Counter("ingressmesh_l7_reloads_total", "Seamless HAProxy reloads (route changes).", registry=r)
        self.runtime_commands = Counter("ingressmesh_l7_runtime_commands_total",
                                        "Runtime API commands (endpoint changes without a reload).", registry=r)
        self.refused_configs = Counter("ingressmesh_l7_refused_configs_total",
                                       "Configs HAProxy refused (the running one stayed).", registry=r)
        self.haproxy_restarts = Counter("ingressmesh_l7_haproxy_restarts_total", "HAProxy restarts after it died.",
                                        registry=r)
        self.refused_services = Gauge("ingressmesh_l7_refused_service", "1 per service whose labels are refused.",
                                      ["service"], registry=r)
        self.refused_objects = Gauge("ingressmesh_l7_refused_objects", "Objects the controller refused (a refused "
                                     "service has neither a VIP nor a route; /healthz names each).", registry=r)
        self.routes = Gauge("ingressmesh_l7_routes", "Host + context root routes served.", registry=r)
        self.servers = Gauge("ingressmesh_l7_servers", "Servers per backend and state.", ["backend", "state"], registry=r)
        self.panic_backends = Gauge("ingressmesh_l7_panic_backend", "1 per backend in panic mode: no task is healthy, "
                                    "so its running tasks serve whatever their health.", ["backend"], registry=r)
        self.certificate_not_after = Gauge("ingressmesh_l7_certificate_not_after_seconds",
                                           "Expiry (epoch seconds) of the certificate served per host; source: "
                                           "secret (ssl_cert labels) or acme.", ["host", "source"], registry=r)
        self.apply_duration = Histogram("ingressmesh_l7_apply_duration_seconds", "Plan + apply of one snapshot.",
                                        buckets=_SYNC_BUCKETS, registry=r)

    def observe_table(self, table) -> None:
        self.routes.set(len(table.routes))
        self.refused_services.clear()
        for refusal in table.refused:
            self.refused_services.labels(service=refusal.service).set(1)
        self.servers.clear()
        self.panic_backends.clear()
        for backend in (b for b in table.backends if b.panic):
            self.panic_backends.labels(backend=backend.name).set(1)
        for backend in table.backends:
            for state in ("active", "draining"):
                self.servers.labels(backend=backend.name, state=state).set(
                    sum(1 for s in backend.servers if s.state == state))

    def observe_certificates(self, rows: list[dict]) -> None:
        self.certificate_not_after.clear()
        for row in rows:
            if row["not_after"] is not None:
                self.certificate_not_after.labels(host=row["host"], source=row["source"]).set(row["not_after"])

    def render_with(self, haproxy_url: str) -> tuple[str, bytes]:
        content_type, ours = self.render()
        try:
            with urllib.request.urlopen(haproxy_url, timeout=2) as response:
                return content_type, ours + response.read()
        except OSError:
            return content_type, ours


class IssuerMetrics(_Metrics):
    """`l7 deploy --listen`'s /metrics: the ACME issuer's state per host (acme_status.py).  Hosts
    passed the label grammar; at most MAX_HOSTS series each, `reason` is a kind, not the text."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.not_after = Gauge("ingressmesh_l7_acme_not_after_seconds", "Expiry of the host's ACME certificate "
                               "(epoch seconds; absent: none issued).", ["host"], registry=r)
        self.last_renewal = Gauge("ingressmesh_l7_acme_last_renewal_timestamp_seconds", "When this issuer last got "
                                  "the host a certificate (absent: not since it started).", ["host"], registry=r)
        self.last_error = Gauge("ingressmesh_l7_acme_last_error_timestamp_seconds", "When the host's last order "
                                "failed; reason: its kind (the text is in /healthz and show --l7).",
                                ["host", "reason"], registry=r)
        self.failures = Gauge("ingressmesh_l7_acme_consecutive_failures", "Failed orders in a row per host.",
                              ["host"], registry=r)
        self.hosts = Gauge("ingressmesh_l7_acme_hosts", "Hosts asking for a certificate (all, not only those "
                           "with series).", registry=r)

    def observe(self, rows: list[dict]) -> "IssuerMetrics":
        for gauge in (self.not_after, self.last_renewal, self.last_error, self.failures):
            gauge.clear()
        self.hosts.set(len(rows))
        for row in rows[:MAX_HOSTS]:
            host = row["host"]
            self.failures.labels(host=host).set(row["failures"])
            if row["version"]:
                self.not_after.labels(host=host).set(row["not_after"])
            if row["issued_at"]:
                self.last_renewal.labels(host=host).set(row["issued_at"])
            if row["last_error"]:
                self.last_error.labels(host=host, reason=error_kind(row["last_error"])).set(row["last_error_at"])
        return self
