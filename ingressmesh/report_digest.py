"""One fingerprint for a node report's facts, computed alike by the agent and the controller.

A heartbeat that repeats the last report sends only this fingerprint; the controller answers
409 when it does not hold a report with it (it restarted, or lost the report), and the agent
then sends the whole report.  A node with thousands of containers then costs the controller a
few bytes every heartbeat instead of parsing and checking every container again.
"""
from __future__ import annotations

import hashlib
import json


def report_digest(report: dict) -> str:
    """sha256 (hex) of the report's containers and lb addresses in canonical JSON, with only
    the fields the controller keeps: a newer agent's extra fields do not make digests differ."""
    containers = report.get("containers") or {}
    facts = {"containers": {task_id: {"health": entry.get("health"), "stopping": entry.get("stopping")}
                            for task_id, entry in containers.items() if isinstance(entry, dict)},
             "lb_addresses": report.get("lb_addresses")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
