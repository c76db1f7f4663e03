"""The snapshot's JSON form for a stream of clusters that mostly repeat the same objects.

The controller re-merges the whole swarm on every change, but between two snapshots nearly
every node, network, service and task is the same frozen object: its plain form is computed
once and reused for as long as it stays, so a change costs what changed, not the swarm.
"""
from __future__ import annotations

from .. import model
from ..snapshot import FORMAT_VERSION, plain_form

KINDS = ("nodes", "networks", "services", "tasks")


class ObjectDicts:
    def __init__(self):
        self.cache: dict = {}  # frozen model object -> its plain form (never mutated once built)

    def cluster_dict(self, cluster: model.Cluster) -> dict:
        """Equal to snapshot.to_dict(cluster); plain forms of unchanged objects are shared."""
        kept: dict = {}
        out: dict = {"version": FORMAT_VERSION}
        for kind in KINDS:
            items = []
            for obj in getattr(cluster, kind):
                form = self.cache.get(obj)
                if form is None:
                    form = kept.get(obj) or plain_form(obj)
                kept[obj] = form
                items.append(form)
            out[kind] = items
        self.cache = kept  # objects gone from the swarm are forgotten
        return out
