"""IPVS on a real swarm: on every VM, `ingressmesh show` lists the IPVS virtual services the
agent (--backend ipvs) programmed for a service with a VIP and a published port, with its tasks,
and `ipvsadm -Ln` in the same namespace agrees; the published port answers from every VM."""
from __future__ import annotations

import re

from conftest import CONTROLLER, DEMO_PORT, node_ip

OUR_MARKS = 0x4D450000  # ingressmesh's fwmarks (README: "The IPVS data plane"); Docker's count from 256


def show(lab, node):
    return lab.json(node, f"ingressmesh show --backend ipvs --exec-root /run/docker --controller {CONTROLLER} --json",
                    timeout=180)


def ipvs_services(lab, node, netns):
    """{fwmark: {real server ip: weight}} from `ipvsadm -Ln` in `netns` ("(host)": the node's own)."""
    prefix = "" if netns == "(host)" else f"nsenter --net={netns} "
    text = lab.out(node, f"{prefix}ipvsadm -Ln")
    services, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^FWM\s+(\d+)\s", line)
        if head:
            current = services.setdefault(int(head.group(1)), {})
            continue
        if re.match(r"^(TCP|UDP|SCTP)\s", line):
            current = None
            continue
        dest = re.match(r"^\s+->\s+(\d+\.\d+\.\d+\.\d+):(\d+)\s+\S+\s+(\d+)", line)
        if dest and current is not None:
            current[dest.group(1)] = int(dest.group(3))
    return services


def demo_rows(table, service):
    return {ns: [row for row in rows if row["service"] == service] for ns, rows in table.items()}


def test_show_lists_the_ipvs_services_and_ipvsadm_agrees(lab, demo):
    tasks = len(lab.nodes)
    for node in lab.nodes:
        def converged():
            table = show(lab, node)
            # the host namespace only forwards the published port to ingress_sbox (no tasks there)
            rows = [row for ns, rows in demo_rows(table, demo).items() if ns != "(host)" for row in rows]
            vip = [r for r in rows if r["frontend"].endswith("(tcp+udp, all ports)")]
            port = [r for r in rows if r["frontend"] == f"tcp/{DEMO_PORT}"]
            full = all(len([b for b in r["backends"] if b["state"] == "active"]) == tasks for r in vip + port)
            return table if vip and port and full else None

        table = lab.wait(f"{node}: show lists {demo}'s VIP and port {DEMO_PORT} with {tasks} tasks",
                         converged, timeout=300, interval=5)
        print(f"--- {node}: ingressmesh show (the demo service's rows)")
        for ns, rows in demo_rows(table, demo).items():
            for row in rows:
                if ns == "(host)":
                    print(f"  {ns}: {row['frontend']}: {row['note']}")
                    continue
                print(f"  {ns}: {row['frontend']}: " +
                      ", ".join(f"{b['address']} {b.get('task', '?')}@{b.get('node', '?')} {b['state']}"
                                for b in row["backends"]))
                for backend in row["backends"]:
                    assert backend.get("task", "").startswith(demo + "."), backend
        # every namespace with IPVS rows: the same services and real servers as ipvsadm's
        for ns, rows in table.items():
            kernel = {mark: dests for mark, dests in ipvs_services(lab, node, ns).items() if mark & 0xFFFF0000 == OUR_MARKS}
            if ns == "(host)":
                assert not kernel, f"{node}: IPVS services of ours in the host namespace: {kernel}"
                continue
            shown = sorted(sorted(b["address"].split(":")[0] for b in row["backends"] if b["state"] == "active")
                           for row in rows if row["backends"])
            listed = sorted(sorted(ip for ip, weight in dests.items() if weight > 0)
                            for dests in kernel.values() if dests)
            print(f"  {node} {ns}: show {shown} / ipvsadm {listed}")
            assert shown == listed, f"{node} {ns}: show says {shown}, ipvsadm -Ln {listed}"


def test_published_port_answers_from_every_vm(lab, demo):
    answers = {}
    for client in lab.nodes:
        for target in lab.nodes:
            # bounded: 6 requests, 5 s each at most
            out = lab.out(client, f"for i in 1 2 3 4 5 6; do curl -sf -m 5 http://{node_ip(target)}:{DEMO_PORT}/ "
                                  f"|| echo FAILED; done", timeout=90)
            got = out.split()
            answers[(client, target)] = got
            print(f"{client} -> {target}:{DEMO_PORT}: {sorted(set(got))}")
            assert "FAILED" not in got, (client, target, got)
    hostnames = {name for got in answers.values() for name in got}
    assert len(hostnames) == len(lab.nodes), hostnames  # every task answers someone
