"""ingressmesh under real systemd in the VMs: both units Type=notify and active (READY reached),
the agent's watchdog restarts an agent whose main loop is stuck, and a restart of the agent under
a bounded load loses no request."""
from __future__ import annotations

import subprocess
import time

from conftest import DEMO_PORT, LAB, MANAGER, node_ip


def test_units_are_notify_and_active(lab):
    units = [(MANAGER, "ingressmesh-controller")] + [(node, "ingressmesh-agent") for node in lab.nodes]
    for node, unit in units:
        props = lab.unit(node, unit)
        print(f"{node} {unit}: {props}")
        assert props["Type"] == "notify", (node, unit, props)
        assert (props["ActiveState"], props["SubState"]) == ("active", "running"), (node, unit, props)
        # Type=notify is only "active" once the daemon sent READY=1
        assert int(props["MainPID"]) > 0
        # /healthz answers 200 on the node (once failed with an HTTP error in a run: wait, bounded,
        # and show what it said)
        port = 9401 if unit.endswith("controller") else 9402
        seen = []

        def healthy():
            out = lab.out(node, f"curl -s -m 10 -w '\\n%{{http_code}}' http://127.0.0.1:{port}/healthz")
            seen.append(out.strip()[-600:])
            return out.strip().endswith("200")

        lab.wait(f"{node} {unit} /healthz 200 (seen: {seen})", healthy, timeout=90, interval=5)
        if len(seen) > 1:
            print(f"{node} {unit} /healthz was not 200 at first: {seen[:-1]}")


WATCHDOG_DROPIN = "/run/systemd/system/ingressmesh-agent.service.d/imvag-watchdog.conf"


def test_watchdog_restarts_a_stuck_agent(lab):
    node = lab.nodes[-1]
    # a shorter watchdog for this test only (/run: gone at the next boot; removed below)
    lab.run(node, f"mkdir -p {WATCHDOG_DROPIN.rsplit('/', 1)[0]} && "
                  f"printf '[Service]\\nWatchdogSec=10\\nTimeoutStopSec=10\\n' > {WATCHDOG_DROPIN} && "
                  "systemctl daemon-reload && systemctl restart ingressmesh-agent")
    try:
        before = lab.unit(node, "ingressmesh-agent")
        assert before["ActiveState"] == "active" and before["WatchdogUSec"] in ("10s", "10000000"), before
        pid = int(before["MainPID"])
        t0 = time.monotonic()
        lab.run(node, f"kill -STOP {pid}")  # the main loop can no longer ping the watchdog

        def restarted():
            props = lab.unit(node, "ingressmesh-agent")
            return props if (int(props["MainPID"]) not in (0, pid) and props["ActiveState"] == "active") else None

        after = lab.wait("the watchdog to restart the stopped agent", restarted, timeout=120, interval=2)
        elapsed = time.monotonic() - t0
        print(f"{node}: agent pid {pid} stopped; systemd restarted it as pid {after['MainPID']} "
              f"after {elapsed:.1f} s (WatchdogSec=10), NRestarts {before['NRestarts']} -> {after['NRestarts']}")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        log = lab.out(node, f"journalctl -u ingressmesh-agent --since '-{int(elapsed) + 60}s' --no-pager | "
                            "grep -i watchdog || true")
        print(log.strip())
        assert "watchdog" in log.lower()
    finally:
        lab.run(node, f"rm -f {WATCHDOG_DROPIN} && systemctl daemon-reload && systemctl restart ingressmesh-agent",
                check=False)


def test_agent_restart_under_load_loses_no_request(lab, demo):
    node = lab.nodes[-1]
    client = MANAGER if node != MANAGER else lab.nodes[(lab.nodes.index(node) + 1) % len(lab.nodes)]
    url = f"http://{node_ip(node)}:{DEMO_PORT}/"
    # a bounded load: at most 600 requests, at most 120 s, from another VM to the restarted node
    script = (f"ok=0; fail=0; end=$(( $(date +%s) + 120 )); "
              f"for i in $(seq 600); do "
              f"  if curl -sf -m 3 -o /dev/null {url}; then ok=$((ok+1)); else fail=$((fail+1)); fi; "
              f"  [ -e /tmp/imvag-load-stop ] && break; [ $(date +%s) -ge $end ] && break; "
              f"done; echo $ok $fail")
    lab.run(client, "rm -f /tmp/imvag-load-stop")
    load = subprocess.Popen([str(LAB), "ssh", client, script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(8)
        before = lab.unit(node, "ingressmesh-agent")
        lab.run(node, "systemctl restart ingressmesh-agent", timeout=150)
        after = lab.unit(node, "ingressmesh-agent")
        assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"], (before, after)
        time.sleep(8)
    finally:
        lab.run(client, "touch /tmp/imvag-load-stop", check=False)
        out, err = load.communicate(timeout=200)
    ok, fail = (int(x) for x in out.split()[-2:])
    print(f"agent restart on {node} under load from {client}: {ok} requests answered, {fail} failed")
    assert ok > 0 and fail == 0, (ok, fail, err[-2000:])
