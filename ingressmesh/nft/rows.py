"""VIP-to-task rows from what an nftables table holds (its elements and their comments)."""
from __future__ import annotations

from ..dataplane.view import REFUSED, SOURCE_KEPT, Row, port_frontend, vip_frontend
from .state import TableState


def _split(comment: str) -> tuple[str, str]:
    service, _, task = comment.partition(" ")
    return service, task


def rows_from_state(state: TableState) -> list[Row]:
    """Group a table's elements per service front-end."""
    rows: list[Row] = []
    backends: dict[tuple, list[tuple[str, str]]] = {}
    for e in state.elements_of("vip_backends"):
        backends.setdefault(("vip", e.key[0]), []).append((str(e.value[0]), "active"))
    for e in state.elements_of("vip_draining"):
        backends.setdefault(("vip", e.key[0]), []).append((str(e.key[1]), "draining"))
    targets = {e.key: e.value[0] for e in state.elements_of("port_targets")}
    for e in state.elements_of("port_backends"):
        target = targets.get(e.key[:2], "?")
        backends.setdefault(("port", e.key[0], e.key[1]), []).append((f"{e.value[0]}:{target}", "active"))
    for e in state.elements_of("port_draining"):
        backends.setdefault(("port", e.key[0], e.key[1]), []).append((f"{e.key[2]}:{e.key[3]}", "draining"))

    for e in state.elements_of("vip_services") + state.elements_of("vip_rejects"):
        note = REFUSED if e.set == "vip_rejects" else ""
        rows.append(Row(vip_frontend(e.key[0]), _split(e.comment)[0],
                        tuple(sorted(backends.get(("vip", e.key[0]), []))), note))
    kept = {(e.key[0], f"{e.key[1]}:{e.key[2]}") for e in state.elements_of("port_keep_source")}
    for e in state.elements_of("port_services") + state.elements_of("port_rejects"):
        note = REFUSED if e.set == "port_rejects" else ""
        if not note and any((e.key[0], b) in kept for b, _ in backends.get(("port", e.key[0], e.key[1]), [])):
            note = SOURCE_KEPT
        rows.append(Row(port_frontend(e.key[0], e.key[1]), _split(e.comment)[0],
                        tuple(sorted(backends.get(("port", e.key[0], e.key[1]), []))), note))
    for e in state.elements_of("published"):
        rows.append(Row(port_frontend(e.key[0], e.key[1]), e.comment, (), "forwarded to the ingress namespace"))
    return sorted(rows)
