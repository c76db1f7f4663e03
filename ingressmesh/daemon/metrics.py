"""Prometheus metrics of the controller and the agent, each in its own registry.

A registry per instance (not prometheus_client's global one) so tests and several daemons in
one process never collide, and `/metrics` shows exactly these series.
"""
from __future__ import annotations

import threading
from typing import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BACKEND_STATES = ("active", "draining")
_SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def render(self) -> tuple[str, bytes]:
        """(content type, body) for a `/metrics` response."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class AgentMetrics(_Metrics):
    """What an agent exposes: how syncs go, what it programmed, whether it hears the controller."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.sync_duration = Histogram(
            "ingressmesh_sync_duration_seconds", "Time to plan and apply one snapshot on this node.",
            buckets=_SYNC_BUCKETS, registry=r)
        self.sync_failures = Counter(
            "ingressmesh_sync_failures_total", "Failed applies, per namespace.", ["namespace"], registry=r)
        self.service_backends = Gauge(
            "ingressmesh_service_backends", "Backends programmed per service, by state.",
            ["service", "state"], registry=r)
        self.service_panic = Gauge(
            "ingressmesh_service_panic", "1 per service in panic mode on this node: no task is healthy, "
            "so its running tasks get traffic whatever their health.", ["service"], registry=r)
        self.snapshot_version = Gauge(
            "ingressmesh_snapshot_version", "Version of the last snapshot applied.", registry=r)
        self.last_successful_sync = Gauge(
            "ingressmesh_last_successful_sync_timestamp_seconds",
            "Unix time of the last fully successful sync.", registry=r)
        self.controller_up = Gauge(
            "ingressmesh_controller_up", "1 when a controller answered the last request, else 0.", registry=r)
        self._backends_lock = threading.Lock()

    def set_backends(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """Replaces every `ingressmesh_service_backends` series: {service: {state: count}}.

        Services absent from `counts` disappear (a removed service must not linger at its last
        value); a missing state counts as 0.
        """
        for service, states in counts.items():
            unknown = set(states) - set(BACKEND_STATES)
            if unknown:
                raise ValueError(f"service {service!r}: unknown backend state(s) {sorted(unknown)}")
        with self._backends_lock:
            self.service_backends.clear()
            for service, states in counts.items():
                for state in BACKEND_STATES:
                    self.service_backends.labels(service=service, state=state).set(states.get(state, 0))

    def set_panic(self, services) -> None:
        """Replaces every `ingressmesh_service_panic` series: one per service named (the rest leave)."""
        with self._backends_lock:
            self.service_panic.clear()
            for service in services:
                self.service_panic.labels(service=service).set(1)


class ControllerMetrics(_Metrics):
    """What a controller exposes: swarm resyncs, the snapshot it serves, who reports to it."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.resync_duration = Histogram(
            "ingressmesh_resync_duration_seconds", "Time to list the swarm and rebuild the snapshot.",
            buckets=_SYNC_BUCKETS, registry=r)
        self.resync_failures = Counter(
            "ingressmesh_resync_failures_total", "Failed swarm API calls, per endpoint.", ["endpoint"], registry=r)
        self.snapshot_version = Gauge(
            "ingressmesh_snapshot_version", "Version of the snapshot being served.", registry=r)
        self.last_successful_resync = Gauge(
            "ingressmesh_last_successful_resync_timestamp_seconds",
            "Unix time of the last successful swarm resync.", registry=r)
        self.agents_reporting = Gauge(
            "ingressmesh_agents_reporting", "Agents whose reports are current.", registry=r)
        self.snapshot_services = Gauge(
            "ingressmesh_snapshot_services", "Services in the served snapshot.", registry=r)
        self.snapshot_tasks = Gauge(
            "ingressmesh_snapshot_tasks", "Tasks in the served snapshot.", registry=r)
        self.refused = Gauge(
            "ingressmesh_refused_objects", "Objects and claims the last merge refused (each named in the "
            "snapshot's refused list and the log).", registry=r)
        self.refused_lb_claims = Gauge(
            "ingressmesh_refused_lb_claims", "Load-balancer address claims refused, per reporting node.",
            ["node"], registry=r)
        self.refused_reports = Counter(
            "ingressmesh_refused_reports_total", "Node reports refused as older than one already accepted "
            "(replayed or delayed), per node.", ["node"], registry=r)

    def observe_counts(self, version: int, counts: Mapping) -> None:
        """Sets the version and size gauges from the published snapshot's object counts."""
        self.snapshot_version.set(version)
        self.snapshot_services.set(counts.get("services", 0))
        self.snapshot_tasks.set(counts.get("tasks", 0))
