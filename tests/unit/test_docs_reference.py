"""The docs name every metric the daemons export and every l7.toml key, so neither can drift."""
from __future__ import annotations

import os

from ingressmesh.daemon.metrics import AgentMetrics, ControllerMetrics
from ingressmesh.l7 import settings
from ingressmesh.l7.metrics import ProxyMetrics

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def _page(name: str) -> str:
    with open(os.path.join(DOCS, name), encoding="utf-8") as handle:
        return handle.read()


def test_operations_page_lists_every_metric():
    page = _page("operations.md")
    missing = []
    for metrics in (AgentMetrics(), ControllerMetrics(), ProxyMetrics()):
        for family in metrics.registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            if f"`{name}`" not in page:
                missing.append(name)
    assert not missing, f"docs/operations.md (Metrics) does not describe: {missing}"


def test_l7_page_lists_every_l7_toml_key():
    page = _page("l7-routing.md")
    missing = [key for key in settings._KEYS if f"| `{key}` |" not in page]
    assert not missing, f"the l7.toml reference in docs/l7-routing.md has no row for: {missing}"
