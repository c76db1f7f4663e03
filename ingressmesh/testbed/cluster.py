"""The cluster model that matches a Testbed, with per-task overrides for each scenario.

Services:
  web    VIP 10.0.1.2 on "app"; publishes tcp 8080->80 and udp 9090->90; tasks t1..t3 healthy,
         t4 still starting (so it is not a backend until a scenario says so)
  empty  VIP 10.0.1.3; publishes tcp 8081->80 and udp 9091->90; no task at all
  client one task per node: the client namespaces, so each node has a local task on "app"
"""
from __future__ import annotations

import dataclasses

from .. import model
from .topology import Testbed

INGRESS_ID = "ingressnet0001"
APP_ID = "appnet00000001"
WEB_VIP = "10.0.1.2"
EMPTY_VIP = "10.0.1.3"
WEB_TCP, WEB_UDP, EMPTY_TCP, EMPTY_UDP = 8080, 9090, 8081, 9091

_DEFAULT_TASKS = {"t1": {}, "t2": {}, "t3": {}, "t4": {"health": "starting"}}


def scenario_cluster(bed: Testbed, overrides: dict | None = None, services: dict | None = None) -> model.Cluster:
    """`overrides` maps a task name to Task field values, e.g. {"t2": {"health": "unhealthy"}};
    `services` maps a service name to Service field values, e.g. {"web": {"ports": ()}}."""
    overrides = overrides or {}
    nodes = tuple(model.Node(id=f"node{i}", hostname=f"node{i}", address=bed.node_address(i),
                             role="manager" if i == 1 else "worker") for i in range(1, bed.nodes + 1))
    networks = (
        model.Network(id=INGRESS_ID, name="ingress", subnet="10.255.0.0/16", ingress=True,
                      lb_addresses=tuple(model.NodeAddress(f"node{i}", bed.ingress_address(i))
                                         for i in range(1, bed.nodes + 1))),
        model.Network(id=APP_ID, name="app", subnet="10.0.1.0/24",
                      lb_addresses=tuple(model.NodeAddress(f"node{i}", bed.lb_address(i))
                                         for i in range(1, bed.nodes + 1))),
    )
    web = model.Service(
        id="svcweb", name="web", vips=(model.VirtualIP(APP_ID, WEB_VIP),),
        ports=(model.PublishedPort("tcp", WEB_TCP, 80), model.PublishedPort("udp", WEB_UDP, 90)))
    empty = model.Service(
        id="svcempty", name="empty", vips=(model.VirtualIP(APP_ID, EMPTY_VIP),),
        ports=(model.PublishedPort("tcp", EMPTY_TCP, 80), model.PublishedPort("udp", EMPTY_UDP, 90)))
    client = model.Service(id="svcclient", name="client", endpoint_mode="dnsrr")
    web, empty = (dataclasses.replace(svc, **(services or {}).get(svc.name, {})) for svc in (web, empty))
    tasks = []
    for spec in bed.tasks:
        ingress_addr, app_addr = bed.task_addresses(spec)
        task = model.Task(id=spec.name, service_id="svcweb", node_id=f"node{spec.node}", slot=spec.index,
                          addresses=(model.NetworkAddress(INGRESS_ID, ingress_addr),
                                     model.NetworkAddress(APP_ID, app_addr)))
        fields = {**_DEFAULT_TASKS.get(spec.name, {}), **overrides.get(spec.name, {})}
        tasks.append(dataclasses.replace(task, **fields))
    for i in range(1, bed.nodes + 1):
        tasks.append(model.Task(id=f"c{i}", service_id="svcclient", node_id=f"node{i}", slot=i,
                                addresses=(model.NetworkAddress(APP_ID, bed.client_address(i)),)))
    return model.Cluster(nodes=nodes, networks=networks, services=(web, empty, client), tasks=tuple(tasks))
