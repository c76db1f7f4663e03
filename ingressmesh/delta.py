"""What changed between two snapshots, as the controller sends it and the agents apply it.

A snapshot is a JSON object whose `nodes`, `networks`, `services` and `tasks` are lists of
objects with an `id`; everything else (the format version, the refusals) is *meta*.  Between two
versions a handful of objects differ, so the controller sends only those:

    {"set":    {"tasks": [<task>, ...], ...},      objects added or changed, whole
     "remove": {"tasks": ["<id>", ...], ...},      ids gone
     "meta":   {"version": 1, "refused": [...]}}   the meta keys, whole (they are small)

A delta applied to the objects of version A gives exactly the objects of version B; order inside
a kind is not part of the meaning (every reader indexes by id).  A kind whose list is not a list
of objects with distinct string ids is carried as meta, whole, so nothing is ever lost.
"""
from __future__ import annotations

from typing import Any, Optional

KINDS = ("nodes", "networks", "services", "tasks")

Objects = dict  # kind -> {id: plain form}, in snapshot order


def split(cluster: dict) -> tuple[Objects, dict]:
    """(objects by kind and id, meta) of a snapshot dict; the forms are shared, not copied."""
    objects, meta = {}, {}
    for key, value in cluster.items():
        indexed = _indexed(value) if key in KINDS else None
        if indexed is None:
            meta[key] = value
        else:
            objects[key] = indexed
    return objects, meta


def _indexed(items: Any) -> Optional[dict]:
    if not isinstance(items, list):
        return None
    found = {}
    for item in items:
        item_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(item_id, str) or item_id in found:
            return None
        found[item_id] = item
    return found


def join(objects: Objects, meta: dict) -> dict:
    """The snapshot dict again: meta keys, then each kind as a list in its stored order."""
    out = dict(meta)
    for kind, items in objects.items():
        out[kind] = list(items.values())
    return out


def diff(old: Objects, old_meta: dict, new: Objects, new_meta: dict) -> dict:
    """The delta from (old, old_meta) to (new, new_meta); empty sets mean nothing changed."""
    sets: dict = {}
    removes: dict = {}
    for kind in set(old) | set(new):
        before, after = old.get(kind, {}), new.get(kind, {})
        changed = [form for item_id, form in after.items() if before.get(item_id) != form]
        gone = [item_id for item_id in before if item_id not in after]
        if changed:
            sets[kind] = changed
        if gone:
            removes[kind] = gone
    # A kind that turned from objects into meta (or back) is sent both ways: its objects go and
    # the meta value comes, so applying the delta never leaves a kind in both places.
    return {"set": sets, "remove": removes, "meta": dict(new_meta) if new_meta != old_meta else None}


def empty() -> dict:
    return {"set": {}, "remove": {}, "meta": None}


def is_empty(delta: dict) -> bool:
    return not delta["set"] and not delta["remove"] and delta["meta"] is None


def apply(objects: Objects, meta: dict, delta: dict) -> dict:
    """Applies `delta` to `objects` in place and returns the new meta.  Objects added keep their
    place at the end of their kind; changed ones keep their place; a kind emptied stays, empty."""
    for kind, ids in delta["remove"].items():
        items = objects.get(kind, {})
        for item_id in ids:
            items.pop(item_id, None)
    for kind, forms in delta["set"].items():
        items = objects.setdefault(kind, {})
        for form in forms:
            items[form["id"]] = form
    new_meta = meta if delta["meta"] is None else dict(delta["meta"])
    for kind in KINDS:
        if kind in new_meta:  # carried whole as meta now
            objects.pop(kind, None)
    return new_meta


def compose(first: dict, second: dict) -> dict:
    """One delta with the effect of `first` then `second` (later sets and removes win)."""
    return compose_all([first, second])


def compose_all(steps: list, limit: Optional[float] = None) -> Optional[dict]:
    """One delta with the effect of `steps` in order, built in one pass; None as soon as it
    carries more than `limit` objects (the whole snapshot is then the cheaper answer)."""
    sets: dict = {}
    removes: dict = {}
    meta = None
    for step in steps:
        for kind, ids in step["remove"].items():
            kind_sets, kind_removes = sets.get(kind, {}), removes.setdefault(kind, set())
            for item_id in ids:
                kind_sets.pop(item_id, None)
                kind_removes.add(item_id)
        for kind, forms in step["set"].items():
            kind_sets, kind_removes = sets.setdefault(kind, {}), removes.get(kind, set())
            for form in forms:
                kind_sets[form["id"]] = form
                kind_removes.discard(form["id"])
        if step["meta"] is not None:
            meta = step["meta"]
        if limit is not None and sum(map(len, sets.values())) + sum(map(len, removes.values())) > limit:
            return None
    return {"set": {k: list(v.values()) for k, v in sets.items() if v},
            "remove": {k: sorted(v) for k, v in removes.items() if v}, "meta": meta}


def size(delta: dict) -> int:
    """How many objects a delta carries (to decide when a whole snapshot is cheaper)."""
    return sum(len(v) for v in delta["set"].values()) + sum(len(v) for v in delta["remove"].values())


def check(data: Any) -> dict:
    """A delta as received over the network, shape-checked: raises ValueError naming the first
    bad part.  The objects inside are checked by the snapshot reader when applied."""
    if not isinstance(data, dict):
        raise ValueError("delta: expected an object")
    for part in ("set", "remove"):
        value = data.get(part)
        if not isinstance(value, dict):
            raise ValueError(f"delta.{part}: expected an object of kind -> list")
        for kind, items in value.items():
            if kind not in KINDS or not isinstance(items, list):
                raise ValueError(f"delta.{part}.{kind}: expected one of {', '.join(KINDS)} with a list")
            seen = set()
            for item in items:
                item_id = item.get("id") if part == "set" and isinstance(item, dict) else item
                if not isinstance(item_id, str):
                    raise ValueError(f"delta.{part}.{kind}: {str(item)[:80]!r} has no string id")
                if item_id in seen:
                    raise ValueError(f"delta.{part}.{kind}: {item_id[:80]!r} appears twice")
                seen.add(item_id)
    for kind, items in data["set"].items():
        both = {item["id"] for item in items} & set(data["remove"].get(kind, ()))
        if both:
            raise ValueError(f"delta.{kind}: {sorted(both)[0][:80]!r} is both set and removed")
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError("delta.meta: expected an object or null")
    return {"set": data["set"], "remove": data["remove"], "meta": meta}
