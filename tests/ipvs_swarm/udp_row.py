"""The fixed-port UDP row of the side-by-side table (moby#36878): a client that sends every
datagram from one source port to a published UDP port, across a start-first update that replaces
the one task behind it.  Every datagram refreshes the flow's conntrack (and IPVS) entry, so a mesh
that never drops the entry of a replaced task keeps sending the flow there, long after the task
is gone.  Measured the same way for every mesh: datagrams unanswered, and when (if at all) the
flow reached the new task.

The `udp` service echoes each datagram's sequence number with its hostname (python3 from the
lab's proxy image: busybox has no UDP server).  Its task runs on node1, the manager, which the
drain row never drains (its task would go pending and come back while the next mesh takes over);
the flow goes through node2's published port, so the datagrams cross the ingress overlay as a
remote client's would."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from ingressmesh.lab.images import PROXY_IMAGE
from ipvs_swarm_helpers import DRAIN, SLOW, STOP_GRACE, running_when
from swarm_helpers import create_service, remove_service, running_tasks, wait_for

UDP = "udp"
UDP_PORT = 9091
# The flow's one source port (as a syslog or statsd sender keeps), one per mesh: an entry an
# earlier mesh's row left in conntrack or IPVS must not carry the next row's flow.
SOURCE_PORTS = {"docker": 40091, "ingressmesh (nftables)": 40092, "ingressmesh (ipvs)": 40093}
INTERVAL = 0.05  # seconds between datagrams
LATE = 1.0  # an answer may take this long (emulation); datagrams younger than it are not judged
WATCH = 30  # seconds after the new task runs that the flow is watched for it
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
        "    s.sendto(data[:20] + b' ' + name, peer)\n")
# Runs in the client's namespace: datagram N (its text is N) every INTERVAL from one source port,
# until stdin closes or `limit` seconds pass; one JSON line per datagram sent (["sent", N, time])
# and per answer (["answer", N, time, hostname]), so a late answer still counts for its datagram.
SENDER = ("import json, select, socket, sys, time\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('0.0.0.0', int(sys.argv[3])))\n"
          "target, interval = (sys.argv[1], int(sys.argv[2])), float(sys.argv[4])\n"
          "end, seq = time.monotonic() + float(sys.argv[5]), 0\n"
          "while time.monotonic() < end:\n"
          "    if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():\n"
          "        break\n"
          "    seq += 1\n"
          "    tick = time.monotonic()\n"
          "    s.sendto(str(seq).encode(), target)\n"
          "    print(json.dumps(['sent', seq, tick]), flush=True)\n"
          "    while time.monotonic() < tick + interval:\n"
          "        if not select.select([s], [], [], max(0.0, tick + interval - time.monotonic()))[0]:\n"
          "            break\n"
          "        number, _, name = s.recvfrom(2048)[0].decode(errors='replace').partition(' ')\n"
          "        if number.isdigit():\n"
          "            print(json.dumps(['answer', int(number), time.monotonic(), name]), flush=True)\n")


def udp_service(lab):
    """Fixture body: the `udp` echo service, one task on node1, published on UDP_PORT."""
    create_service(lab, UDP, "--replicas", "1", "--constraint", "node.hostname==node1",
                   "--publish", f"published={UDP_PORT},target={UDP_PORT},protocol=udp",
                   "--stop-grace-period", STOP_GRACE, image=PROXY_IMAGE, command=("python3", "-c", ECHO))
    wait_for("the udp echo task running", lambda: running_tasks(lab, UDP), timeout=SLOW, interval=1)
    yield UDP
    remove_service(lab, UDP)


class FixedPortFlow:
    """The sender above, run from the test in the client's namespace: when each datagram was
    sent, and who answered it."""

    def __init__(self, netns: str, address: str, source_port: int, limit: float):
        self.sent: dict[int, float] = {}
        self.answers: dict[int, str] = {}
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-c", SENDER, address, str(UDP_PORT),
             str(source_port), str(INTERVAL), str(limit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = json.loads(line)
            if event[0] == "sent":
                self.sent[event[1]] = event[2]
            else:
                self.answers.setdefault(event[1], event[3])

    def answered_by(self, name: str) -> bool:
        return name in list(self.answers.values())

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


def measure(lab, results, mesh: str) -> None:
    """The row for `mesh`: the flow through node2 while `udp` is updated (start-first, forced)."""
    old = wait_for("udp's task", lambda: running_tasks(lab, UDP), timeout=SLOW, interval=1)[0]["container"]
    flow = FixedPortFlow(lab.client_netns(), lab.node_address(2), SOURCE_PORTS[mesh], limit=8 * SLOW)
    try:
        wait_for(f"the UDP flow answered by udp's task {old} through node2 ({mesh})",
                 lambda: flow.answered_by(old), timeout=SLOW, interval=0.5)
        started = time.monotonic()
        lab.docker(1, "service", "update", "--detach", "--force", "--update-order", "start-first", UDP, timeout=SLOW)
        # Not UpdateStatus: Swarm clears it when it takes an update, so "no status" can mean "not begun".
        new = wait_for("udp's new task running, the old one not",
                       lambda: running_when(lab, UDP, 1, lambda t: t["container"] != old),
                       timeout=SLOW, interval=0.5)[0]["container"]
        swapped = time.monotonic()
        deadline = swapped + WATCH
        while time.monotonic() < deadline and not flow.answered_by(new):
            time.sleep(0.2)
        time.sleep(LATE + 1)  # a few more datagrams (the flow stays on the new task), their answers in
        judged_until = time.monotonic() - LATE
    finally:
        flow.close()
    window = sorted((sent, n) for n, sent in flow.sent.items() if started <= sent <= judged_until)
    unanswered = sum(1 for _, n in window if n not in flow.answers)
    last_old = max((sent for sent, n in window if flow.answers.get(n) == old), default=started)
    first_new = min((sent for sent, n in window if flow.answers.get(n) == new), default=None)
    if first_new is None:
        moved = (f"never reached the new task within {WATCH} s of it running "
                 f"({swapped - started:.0f} s after the update began)")
    else:
        moved = (f"reached the new task {first_new - last_old:.1f} s after the old one last answered "
                 f"({first_new - swapped:+.1f} s from the new task running instead of the old)")
    results.put(mesh, "fixed-port UDP flow across a start-first update (moby#36878)",
                f"{unanswered} of {len(window)} datagrams unanswered; {moved}")
    print(f"UDP flow ({mesh}): {unanswered} of {len(window)} unanswered; {moved}", flush=True)
    if mesh != "docker":
        assert first_new is not None, f"{mesh}: the fixed-port UDP flow {moved}"
