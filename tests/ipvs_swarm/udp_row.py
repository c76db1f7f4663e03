"""The fixed-port UDP row of the side-by-side table (moby#36878): a client that sends every
datagram from one source port to a published UDP port, across a start-first update that replaces
the one task behind it.  Every datagram refreshes the flow's conntrack (and IPVS) entry, so a mesh
that never drops the entry of a replaced task keeps sending the flow there, long after the task
is gone.  Measured the same way for every mesh: datagrams unanswered, and when (if at all) the
flow reached the new task.

The `udp` service echoes each datagram with its hostname (python3 from the lab's proxy image:
busybox has no UDP server).  Its task runs on node2; the flow goes through node1's published
port, so the datagrams cross the ingress overlay as a remote client's would."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from ingressmesh.lab.images import PROXY_IMAGE
from ipvs_swarm_helpers import DRAIN, SLOW, STOP_GRACE
from swarm_helpers import create_service, remove_service, running_tasks, wait_for

UDP = "udp"
UDP_PORT = 9091
SOURCE_PORT = 40091  # the flow's one source port, as a syslog or statsd sender keeps
INTERVAL = 0.05  # seconds between datagrams; each waits this long for its answer
WATCH = 30  # seconds after the update ends that the flow is watched for the new task
# It drains as web does (ipvs_swarm_helpers.DRAIN): on SIGTERM it answers DRAIN s more, so a mesh
# that moves the flow within that time loses nothing, and one that keeps it pinned to the old task
# loses every datagram from the task's exit on.
ECHO = ("import signal, socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(('0.0.0.0', {UDP_PORT}))\n"
        "s.settimeout(0.2)\n"
        "name = socket.gethostname().encode()\n"
        "end = []\n"
        f"signal.signal(signal.SIGTERM, lambda *_: end.append(time.monotonic() + {DRAIN}))\n"
        "while not end or time.monotonic() < end[0]:\n"
        "    try:\n"
        "        data, peer = s.recvfrom(2048)\n"
        "    except OSError:\n"
        "        continue\n"
        "    s.sendto(name, peer)\n")
# Runs in the client's namespace: one datagram every INTERVAL from SOURCE_PORT, one line per
# datagram (monotonic time, who answered or "-"), until stdin closes or `limit` seconds pass.
SENDER = ("import json, select, socket, sys, time\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', int(sys.argv[3])))\n"
          "interval, end = float(sys.argv[4]), time.monotonic() + float(sys.argv[5])\n"
          "while time.monotonic() < end:\n"
          "    if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():\n"
          "        break\n"
          "    sent = time.monotonic()\n"
          "    answer = '-'\n"
          "    try:\n"
          "        s.sendto(b'ping', (sys.argv[1], int(sys.argv[2])))\n"
          "        s.settimeout(interval)\n"
          "        answer = s.recvfrom(2048)[0].decode(errors='replace')\n"
          "        while time.monotonic() < sent + interval:\n"  # drain late answers of earlier datagrams
          "            s.settimeout(max(0.001, sent + interval - time.monotonic()))\n"
          "            s.recvfrom(2048)\n"
          "    except OSError:\n"  # no answer in time, or ICMP unreachable
          "        pass\n"
          "    print(json.dumps([sent, answer]), flush=True)\n"
          "    time.sleep(max(0.0, sent + interval - time.monotonic()))\n")  # refusals come at once


def udp_service(lab):
    """Fixture body: the `udp` echo service, one task on node2, published on UDP_PORT."""
    create_service(lab, UDP, "--replicas", "1", "--constraint", "node.hostname==node2",
                   "--publish", f"published={UDP_PORT},target={UDP_PORT},protocol=udp",
                   "--stop-grace-period", STOP_GRACE, image=PROXY_IMAGE, command=("python3", "-c", ECHO))
    wait_for("the udp echo task running", lambda: running_tasks(lab, UDP), timeout=SLOW, interval=1)
    yield UDP
    remove_service(lab, UDP)


class FixedPortFlow:
    """The sender above, run from the test in the client's namespace; `answers` collects its lines."""

    def __init__(self, netns: str, address: str, limit: float):
        self.answers: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-c", SENDER, address, str(UDP_PORT),
             str(SOURCE_PORT), str(INTERVAL), str(limit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            sent, answer = json.loads(line)
            self.answers.append((sent, answer))

    def answered_by(self, name: str) -> bool:
        return any(answer == name for _, answer in self.answers)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(5)


def update_done(lab) -> bool:
    service = lab.docker_client(1)
    try:
        status = service.api.inspect_service(UDP).get("UpdateStatus") or {}
    finally:
        service.close()
    return status.get("State") in (None, "completed")


def measure(lab, results, mesh: str) -> None:
    """The row for `mesh`: the flow through node1 while `udp` is updated (start-first, forced)."""
    old = wait_for("udp's task", lambda: running_tasks(lab, UDP), timeout=SLOW, interval=1)[0]["container"]
    flow = FixedPortFlow(lab.client_netns(), lab.node_address(1), limit=4 * SLOW)
    try:
        wait_for(f"the UDP flow answered by udp's task {old} through node1 ({mesh})",
                 lambda: flow.answered_by(old), timeout=SLOW, interval=0.5)
        started = time.monotonic()
        lab.docker(1, "service", "update", "--detach", "--force", "--update-order", "start-first", UDP, timeout=SLOW)
        wait_for("udp's update to finish", lambda: update_done(lab), timeout=SLOW, interval=1)
        new = wait_for("udp's new task", lambda: [t for t in running_tasks(lab, UDP) if t["container"] != old],
                       timeout=SLOW, interval=1)[0]["container"]
        ended = time.monotonic()
        deadline = ended + WATCH
        while time.monotonic() < deadline and not flow.answered_by(new):
            time.sleep(0.2)
        time.sleep(1)  # a few more datagrams: the flow stays on the new task
    finally:
        flow.close()
    window = [(t, a) for t, a in flow.answers if t >= started]
    unanswered = sum(1 for _, a in window if a == "-")
    last_old = max((t for t, a in window if a == old), default=started)
    first_new = min((t for t, a in window if a == new), default=None)
    if first_new is None:
        moved = (f"never reached the new task within {WATCH} s of the update's end "
                 f"(the update took {ended - started:.0f} s)")
    else:
        moved = (f"reached the new task {first_new - last_old:.1f} s after the old one last answered "
                 f"({first_new - ended:+.1f} s from the update's end)")
    results.put(mesh, "fixed-port UDP flow across a start-first update (moby#36878)",
                f"{unanswered} of {len(window)} datagrams unanswered; {moved}")
    print(f"UDP flow ({mesh}): {unanswered} of {len(window)} unanswered; {moved}", flush=True)
    if mesh != "docker":
        assert first_new is not None, f"{mesh}: the fixed-port UDP flow {moved}"
