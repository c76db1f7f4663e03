"""Puts a RouteTable into the running HAProxy the cheapest safe way.

Same routes and pool sizes → runtime API only (no reload, no dropped connection).  Anything
else → render, `haproxy -c`, install, seamless reload.  A config HAProxy refuses is never
installed: the running one stays, the error is kept for /healthz and the metrics, endpoint
changes of the backends that did not change shape still go through the runtime API (so one
bad route never stops health changes elsewhere), and the next table is tried afresh.  After
anything that leaves HAProxy's state unknown (a runtime reply that is not a success, a failed
reload, a crash) the next apply re-installs the whole state from the config.

Before anything, the TLS secrets the table names are checked and written (certs.py): a service
whose certificate cannot serve is refused there, by name, and never reaches a config.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from . import runtime, slots
from .certs import CertStore
from .haproxy import HAProxy, HAProxyError, write_atomic
from .render import ProxySettings, map_commands, render_config, render_map
from .render_tls import render_crt_list
from .routes import RouteTable

log = logging.getLogger(__name__)
MIN_RELOAD_INTERVAL = 0.2  # seconds between two reloads (a new worker per change at most this often)


@dataclass
class ApplyResult:
    how: str  # "unchanged", "runtime", "reload", "start" or "refused"
    commands: int = 0
    error: Optional[str] = None
    table: Optional[RouteTable] = None  # the table as applied: with the refusals of unusable certificates


class RouteApplier:
    def __init__(self, haproxy: HAProxy, settings: ProxySettings,
                 render: Callable[..., str] = render_config, clock: Callable[[], float] = time.monotonic,
                 certs: Optional[CertStore] = None):
        self.haproxy, self.settings, self.render, self.clock = haproxy, settings, render, clock
        self.certs = certs or CertStore(settings.secrets_dir, os.path.join(haproxy.files.workdir, "tls"))
        self.table: Optional[RouteTable] = None  # what HAProxy runs now
        self.slots: slots.Assignment = {}
        self.generation = 0
        self.last_reload = float("-inf")
        self.runtime_commands = 0
        self.refused_configs = 0
        self.last_error: Optional[str] = None
        self.dirty = False  # HAProxy's state may differ from self.slots: re-install next time

    def apply(self, table: RouteTable) -> ApplyResult:
        table = self.certs.resolve(table, https=self.settings.https_port > 0)
        result = self._apply(table)
        result.table = table
        return result

    def _apply(self, table: RouteTable) -> ApplyResult:
        wanted = slots.assign(self.slots, table)
        if self.table is not None and self.haproxy.running and not self.dirty and self._same_shape(table, wanted):
            found = runtime.changes(self.slots, wanted)
            map_path = self.haproxy.files.map_file(self.generation)
            edits = map_commands(map_path, self.table.map_entries(), table.map_entries())
            if not found and not edits:
                self.table, self.slots = table, wanted
                return ApplyResult("unchanged")
            try:
                # Servers first: a new route then never points at a backend without them.
                sent = runtime.apply_changes(self.haproxy.files.admin_socket, found)
                sent += runtime.apply_commands(self.haproxy.files.admin_socket, edits)
                if edits:
                    write_atomic(map_path, render_map(table))  # what a reload or restart reads
            except runtime.RuntimeApiError as err:
                log.warning("runtime update failed (%s); reloading to resync", err)
                self.dirty = True
            else:
                self.runtime_commands += sent
                self.table, self.slots = table, wanted
                return ApplyResult("runtime", sent)
        return self._install(table, wanted)

    def reinstall(self) -> ApplyResult:
        """Render, check and reload what runs now (SIGHUP: e.g. after editing nothing but wanting
        a fresh worker).  Nothing to do before the first table."""
        if self.table is None:
            return ApplyResult("unchanged")
        return self._install(self.table, self.slots)

    def _same_shape(self, table: RouteTable, wanted: slots.Assignment) -> bool:
        return table.shape() == self.table.shape() and slots.pool_sizes(wanted) == slots.pool_sizes(self.slots)

    def _install(self, table: RouteTable, wanted: slots.Assignment) -> ApplyResult:
        files = self.haproxy.files
        generation = self.generation + 1
        map_path = files.map_file(generation)
        crt_list = os.path.join(files.workdir, f"crt-list-{generation}")
        candidate = f"{files.config}.new"
        try:
            text = self.render(table, wanted, replace(self.settings, map_file=map_path, crt_list=crt_list))
            write_atomic(map_path, render_map(table))
            write_atomic(crt_list, render_crt_list(table))  # names files, holds no key
            write_atomic(candidate, text)
            self.haproxy.check(candidate)
        except (HAProxyError, ValueError, OSError) as err:
            self.refused_configs += 1
            self.last_error = str(err)
            log.error("new config not loaded, the running one stays: %s", err)
            return ApplyResult("refused", self._runtime_where_possible(table, wanted), str(err))
        wait = self.last_reload + MIN_RELOAD_INTERVAL - self.clock()
        if wait > 0:
            time.sleep(wait)
        previous = _read(files.config)
        os.replace(candidate, files.config)
        starting = not self.haproxy.running
        try:
            self.haproxy.start() if starting else self.haproxy.reload()
        except HAProxyError as err:
            self.last_error, self.dirty = str(err), True
            log.error("%s", err)
            if previous is not None:  # a later restart must load the last good config
                write_atomic(files.config, previous)
            return ApplyResult("refused", error=str(err))
        self.last_reload = self.clock()
        self.table, self.slots, self.generation, self.last_error = table, wanted, generation, None
        self.dirty = False
        self._remove_old_maps(keep={map_path, crt_list})
        self.certs.prune(self.certs.files(table))
        return ApplyResult("start" if starting else "reload")

    def _runtime_where_possible(self, table: RouteTable, wanted: slots.Assignment) -> int:
        """Runtime changes for the backends whose shape and pool did not change; commands sent."""
        if self.table is None or not self.haproxy.running or self.dirty:
            return 0
        old = {b.name: b.shape() for b in self.table.backends}
        same = {b.name for b in table.backends
                if old.get(b.name) == b.shape() and len(wanted[b.name]) == len(self.slots.get(b.name, ()))}
        subset = {name: wanted[name] for name in same}
        try:
            sent = runtime.apply_changes(self.haproxy.files.admin_socket, runtime.changes(self.slots, subset))
        except runtime.RuntimeApiError as err:
            log.warning("runtime update failed (%s); re-installing next time", err)
            self.dirty = True
            return 0
        self.runtime_commands += sent
        self.slots = {**self.slots, **subset}
        return sent

    def _remove_old_maps(self, keep: set[str]) -> None:
        workdir = self.haproxy.files.workdir
        old = glob.glob(self.haproxy.files.map_file(0).replace("-0.map", "-*.map"))
        for path in old + glob.glob(os.path.join(workdir, "crt-list-*")):
            if path not in keep:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None
