"""How a proxy service rolls (attaching a network or a secret replaces every task) and whether a
roll is stuck.  Pure: Docker's node, service and task dicts in, decisions and sentences out.

Start-first (a new replica serves before an old one stops) is the default: no request fails.
It needs room for one more task.  A host-mode published port is held by one task per node, so
when the proxies already run on every node they may run on (Interlock's layout for service
clusters: host-published proxies pinned one per node), the new task can never be scheduled
("host-mode port already in use") and the update waits for ever.  Those proxy services roll
stop-first, one replica at a time: the other replicas serve meanwhile (the front load balancer
of host-mode proxies is expected to send to every node), and the update always completes.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from .settings import ProxyServiceSettings

START_FIRST, STOP_FIRST = "start-first", "stop-first"
# No progress for this long, on top of what one replica's turn may take, counts as stuck.
STUCK_AFTER = 120.0
PENDING_STUCK = 10.0  # a new task Swarm cannot place for this long (it retries placement every few s)
TURN = 30.0  # start period (20 s) + monitor (5 s) + slack, besides the stop grace and delay
_CONSTRAINT = re.compile(r"^([A-Za-z0-9_.\-]+) *(==|!=) *(.+)$")


def _node_value(node: dict, key: str) -> Optional[str]:
    """The value a placement constraint key names on `node`; None for a key not known here."""
    spec, description = node.get("Spec") or {}, node.get("Description") or {}
    simple = {"node.id": node.get("ID"), "node.hostname": description.get("Hostname"), "node.role": spec.get("Role"),
              "node.platform.os": (description.get("Platform") or {}).get("OS"),
              "node.platform.arch": (description.get("Platform") or {}).get("Architecture")}
    if key in simple:
        return simple[key]
    for prefix, found in (("node.labels.", spec.get("Labels")), ("engine.labels.", (description.get("Engine") or {}).get("Labels"))):
        if key.startswith(prefix):
            return (found or {}).get(key[len(prefix):], "")
    return None


def eligible_nodes(nodes: list[dict], constraints: tuple[str, ...]) -> int:
    """Ready, active nodes that satisfy every constraint.  A constraint key not understood here
    makes the node count as not eligible: stop-first is then chosen, which never gets stuck."""
    count = 0
    for node in nodes:
        if (node.get("Spec") or {}).get("Availability", "active") != "active" or \
                (node.get("Status") or {}).get("State") != "ready":
            continue
        ok = True
        for constraint in constraints:
            found = _CONSTRAINT.fullmatch(constraint.strip())
            value = _node_value(node, found.group(1)) if found else None
            if value is None or (value == found.group(3).strip()) != (found.group(2) == "=="):
                ok = False
                break
        count += ok
    return count


def update_order(settings: ProxyServiceSettings, eligible: Optional[int]) -> str:
    """Start-first unless the tasks cannot be doubled: host-mode ports and no spare eligible node
    (`eligible` None: unknown, so the safe stop-first for host mode)."""
    if settings.publish_mode == "host" and (eligible is None or eligible <= settings.replicas):
        return STOP_FIRST
    return START_FIRST


def patience(settings: ProxyServiceSettings) -> float:
    """How long a whole rolling update of this proxy service may take before it counts as stuck."""
    return STUCK_AFTER + settings.replicas * (settings.stop_grace_period + settings.update_delay + TURN)


def update_problem(service: dict, tasks: Callable[[], list[dict]], now: float, parse_time,
                   waited_max: float) -> Optional[str]:
    """Why the service's rolling update is stuck, or None.  Paused or paused rollback (Swarm's
    FailureAction), a new task Swarm cannot place (its error says why, e.g. "host-mode port
    already in use"), or an update still running `waited_max` seconds (`patience`) after it began.
    `tasks` is called only while an update runs."""
    status = service.get("UpdateStatus") or {}
    state = status.get("State", "")
    name = (service.get("Spec") or {}).get("Name", service.get("ID", "?"))
    if state in ("paused", "rollback_paused"):
        return f"proxy service {name}: update {state.replace('_', ' ')}: {status.get('Message') or 'no reason given'}"
    if state not in ("updating", "rollback_started"):
        return None
    version = (service.get("Version") or {}).get("Index")
    started = parse_time(status.get("StartedAt", ""))
    for task in tasks():
        task_status = task.get("Status") or {}
        if task.get("DesiredState") == "running" and task_status.get("State") == "pending" and task_status.get("Err"):
            # The update's start, not the task's timestamp: Swarm may refresh that on each retry.
            since = started or parse_time(task_status.get("Timestamp", ""))
            if now - since >= PENDING_STUCK:
                return (f"proxy service {name}: update stuck: a new task cannot be scheduled "
                        f"(pending over {PENDING_STUCK:g} s): {task_status['Err']}")
    if started and now - started > waited_max:
        return f"proxy service {name}: update (spec version {version}) has not finished in {waited_max:.0f} s"
    return None
