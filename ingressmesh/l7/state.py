"""What the proxy serves, for `ingressmesh l7 state` and `show --l7`: the route table with each
slot's task, node and health (state.json, written after every apply) joined with what the
running HAProxy reports for each server (`show servers state`)."""
from __future__ import annotations

from typing import Optional

from . import runtime
from .slots import slot_name

# Forced, inherited or resolution maintenance.  Not 0x04 (disabled in the config): HAProxy 2.6
# keeps showing it after `set server state ready` on such a slot, which then serves.
SRV_ADMIN_MAINT = 0x01 | 0x02 | 0x20


def state_document(applier, version: int, service_cluster: str) -> dict:
    table = applier.table
    backends = {}
    for name, pool in applier.slots.items():
        backend = table.backend(name) if table else None
        backends[name] = {
            "services": list(backend.services) if backend else [], "mode": backend.mode if backend else "",
            "strip_prefix": backend.strip_prefix if backend else "",
            "options": _options(backend) if backend else {},
            "slots": [{"slot": slot_name(i), "service": s.service, "task_id": s.task_id, "node": s.node,
                       "address": s.address, "port": s.port, "state": s.state, "health": s.health}
                      for i, s in enumerate(pool) if s is not None]}
    return {"snapshot_version": version, "service_cluster": service_cluster,
            "config_generation": applier.generation, "master_pid": applier.haproxy.master_pid,
            "reloads": applier.haproxy.reloads, "runtime_commands": applier.runtime_commands,
            "last_error": applier.last_error, "admin_socket": applier.haproxy.files.admin_socket,
            "routes": [{"host": r.host, "path": r.path, "backend": r.backend} for r in (table.routes if table else ())],
            "redirects": [{"host": r.source_host, "scheme": r.scheme, "target": r.target} for r in (table.redirects if table else ())],
            "backends": backends,
            "tls": [{"host": t.host, "services": list(t.services), "ssl_cert": t.cert, "ssl_key": t.key,
                     "ssl_only": t.only, "ssl_passthrough": t.passthrough} for t in (table.tls_hosts if table else ())],
            "refused": [{"service": r.service, "reason": r.reason} for r in (table.refused if table else ())],
            "notes": list(table.notes) if table else []}


def _options(backend) -> dict:
    """The backend's TLS and session options that are set (secret names only, never content)."""
    found = {"proto": backend.proto, "balance": backend.balance, "sticky_cookie": backend.cookie,
             "websocket_paths": list(backend.websocket_paths), "ssl": backend.ssl, "ssl_ca": backend.ca_secret}
    return {k: v for k, v in found.items() if v}


def with_live_state(document: dict, admin_socket: Optional[str] = None) -> dict:
    """The document with each slot's live HAProxy view: `live` = up/down/maint and its weight,
    `serving` = active (new requests), draining (weight 0) or off."""
    rows = {(r["backend"], r["server"]): r for r in runtime.servers_state(admin_socket or document["admin_socket"])}
    for name, backend in document["backends"].items():
        for slot in backend["slots"]:
            row = rows.get((name, slot["slot"]))
            if row is None:
                slot["live"], slot["serving"] = "missing", "off"
                continue
            maint = bool(row["admin_state"] & SRV_ADMIN_MAINT)
            up = row["op_state"] == 2
            slot["live"] = "maint" if maint else ("up" if up else "down")
            slot["live_address"] = f"{row['address']}:{row['port']}"
            slot["weight"] = row["weight"]
            slot["serving"] = "off" if maint or not up else ("active" if row["weight"] > 0 else "draining")
    return document
