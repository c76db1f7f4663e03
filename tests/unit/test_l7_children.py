"""The proxy's reaper (issue 20): orphans re-parented to it are reaped, the exit status of a
process it started itself is left to its Popen (a refused `haproxy -c` must stay a failure).
Real processes, in a child Python that becomes a subreaper (the test runner itself stays as is)."""
import json
import subprocess
import sys

SCRIPT = r"""
import json, os, subprocess, time
from ingressmesh.l7.children import Children, become_subreaper
assert become_subreaper()
children = Children()
# An orphan: the shell exits at once, its background child is re-parented to us and exits 3.
subprocess.run(["sh", "-c", "(sleep 0.2; exit 3) & exit 0"], check=True)
own = children.popen(["sh", "-c", "sleep 0.3; exit 7"])
failed = children.run(["sh", "-c", "echo ALERT bad >&2; exit 1"], timeout=10)
reaped, deadline = [], time.monotonic() + 10
while time.monotonic() < deadline and (not reaped or own.poll() is None):
    reaped += children.reap()
    time.sleep(0.05)
time.sleep(0.5)  # our own process exited meanwhile: reap() must have left it to its Popen
reaped += children.reap()
print(json.dumps({"reaped": [os.waitstatus_to_exitcode(s) for _, s in reaped], "own": own.wait(),
                  "check": [failed.returncode, failed.stderr], "zombies": children.zombies()}))
"""


def test_orphans_are_reaped_and_our_own_exit_statuses_kept():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == {"reaped": [3], "own": 7, "check": [1, "ALERT bad\n"], "zombies": []}
