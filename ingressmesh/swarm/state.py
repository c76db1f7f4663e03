"""What one read of a manager's API yields: the swarm's objects in model form, plus refusals.

Kept separate from the cluster snapshot because health and load-balancer addresses are not
in it: those come from each node's own dockerd, through the agents (see controller/merge.py).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from .. import model
from .convert import (convert_all, convert_network, convert_node, convert_service, convert_task,
                      has_healthcheck, is_swarm_overlay, task_attachments)


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwarmState:
    nodes: tuple[model.Node, ...] = ()
    networks: tuple[model.Network, ...] = ()
    services: tuple[model.Service, ...] = ()
    tasks: tuple[model.Task, ...] = ()
    # Services whose spec has a health check: their tasks count as "starting" until a node says.
    health_checked: frozenset = frozenset()
    errors: tuple[str, ...] = ()  # objects refused, each message naming its object
    # (node id, network id) for every task the manager lists on a node, attached to a network and
    # not dead, including the network attachments of standalone containers (no service): where
    # Docker gives a node a load-balancer endpoint (controller/lb_claims.py).
    attachments: frozenset = frozenset()

    @functools.cached_property
    def task_ids(self) -> frozenset:
        """Asked on every node report: computed once per state."""
        return frozenset(t.id for t in self.tasks)


def read_swarm(api) -> SwarmState:
    """List nodes, overlay networks, services and tasks from a manager (docker.APIClient)."""
    nodes, node_errors = convert_all(api.nodes(), convert_node)
    overlays = [n for n in api.networks() if is_swarm_overlay(n)]
    networks, network_errors = convert_all(overlays, convert_network)
    raw_services = api.services()
    services, service_errors = convert_all(raw_services, convert_service)
    raw_tasks = api.tasks()
    tasks, task_errors = convert_all(raw_tasks, convert_task)
    checked = frozenset(s["ID"] for s in raw_services if has_healthcheck(s))
    return SwarmState(tuple(nodes), tuple(networks), tuple(services), tuple(tasks), checked,
                      tuple(node_errors + network_errors + service_errors + task_errors),
                      task_attachments(raw_tasks + read_attachments(api)))


def read_tasks(api, state: SwarmState) -> SwarmState:
    """Only the task list again: the fast resync that stands in for the task events Swarm lacks."""
    raw_tasks = api.tasks()
    tasks, errors = convert_all(raw_tasks, convert_task)
    kept = tuple(e for e in state.errors if not e.startswith("task "))
    return SwarmState(state.nodes, state.networks, state.services, tuple(tasks), state.health_checked,
                      kept + tuple(errors), task_attachments(raw_tasks + read_attachments(api)))


def read_attachments(api) -> list:
    """The network-attachment tasks of standalone containers on attachable networks (`docker run
    --network`): a manager lists container tasks only unless the runtime filter asks for these."""
    try:
        return list(api.tasks(filters={"runtime": "attachment"}))
    except Exception as err:  # noqa: BLE001 - an engine without the filter: none known, claims there refused
        log.debug("attachment tasks not listed: %s", err)
        return []
