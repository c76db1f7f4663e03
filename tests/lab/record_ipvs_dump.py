"""Record KernelIpvs.dump() after applying the scenario's lb and ingress plans, for the unit
tests' recorded dump (tests/unit/data/ipvs_dump_scenario.json).  Run it in the kernel lab:
  scripts/kernel-lab --share DIR -- .venv/bin/python tests/lab/record_ipvs_dump.py
and copy DIR/ipvs_dump.json over the data file."""
import json
import os
import secrets
import subprocess

from ingressmesh.ipvs.backend import IpvsBackend
from ingressmesh.netns import Netns
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed
NOW = 1_000_000.0
labels = {"web": {"labels": (("io.ingressmesh.lb.scheduler", "sh"),)}}
cluster = scenario_cluster(Testbed(prefix="rec"), {"t2": {"health": "unhealthy", "since": NOW - 1}}, labels)
plan = plan_node(cluster, "node1", PlanOptions(now=NOW))
out = {}
for key in (f"lb:{APP_ID}", "ingress"):
    name = "imrec-" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", name], check=True)
    for argv in (["link", "set", "lo", "up"], ["link", "add", "eth0", "type", "dummy"], ["link", "set", "eth0", "up"],
                 ["addr", "add", "10.0.1.251/24", "dev", "eth0"], ["addr", "add", "10.255.0.2/16", "dev", "eth0"]):
        subprocess.run(["ip", "-n", name, *argv], check=True)
    ns = Netns.from_ref(name)
    b = IpvsBackend(ns)
    b.apply(plan.namespace(key))
    out[key] = [{"mark": s.mark, "scheduler": s.scheduler, "dests": [[a, p, w] for (a, p), w in sorted(s.dests.items())]}
                for s in b.ipvs.dump().values()]
    out[key + " ipvsadm"] = ns.run(["ipvsadm", "-Ln"]).stdout
    subprocess.run(["ip", "netns", "del", name], check=True)
with open(os.environ["KERNEL_LAB_SHARE"] + "/ipvs_dump.json", "w", encoding="utf-8") as handle:
    json.dump(out, handle, indent=1)
print(json.dumps(out, indent=1))
