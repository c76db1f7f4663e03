"""What the stack's agent does to its own container's mounts, on the real kernel, in a private
mount namespace (unshare) that reproduces the container's: /proc/sys/net (only) made writable
(agent/writable_sysctls.py), a thread that entered a namespace this test made setting ip_forward
there through it; the cluster secret's file covered once the node credential is derived
(agent/bootstrap_secret.py)."""
import json
import os
import subprocess
import sys

import pytest

from ingressmesh.netns import Netns

pytestmark = pytest.mark.kernel

CHILD = r"""
import errno, json, os, subprocess, sys
from ingressmesh.agent.writable_sysctls import ensure_writable_sysctls
from ingressmesh.netns import Netns

def writable(path):
    try:
        os.close(os.open(path, os.O_WRONLY))  # opened, never written
        return True
    except OSError as err:
        if err.errno != errno.EROFS:
            raise
        return False

# What Docker does to a container's /proc/sys (a read-only bind of itself).
subprocess.run(["mount", "--bind", "/proc/sys", "/proc/sys"], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", "/proc/sys"], check=True)
before = {"net": writable("/proc/sys/net/ipv4/ip_forward"), "kernel": writable("/proc/sys/kernel/hostname")}
problem = ensure_writable_sysctls()
again = ensure_writable_sysctls()  # a second call finds /proc/sys/net writable: nothing to do
after = {"net": writable("/proc/sys/net/ipv4/ip_forward"), "kernel": writable("/proc/sys/kernel/hostname"),
         "vm": writable("/proc/sys/vm/swappiness")}
Netns(sys.argv[1]).set_sysctl("net.ipv4.ip_forward", "1")  # setns in a thread, then /proc/sys/net
print(json.dumps({"before": before, "problem": problem, "again": again, "after": after}))
"""


def test_only_proc_sys_net_becomes_writable_and_it_shows_the_entered_namespace(scratch):
    ns = scratch
    root_forward = Netns.from_ref("").sysctl("net.ipv4.ip_forward")
    ns.set_sysctl("net.ipv4.ip_forward", "0")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", CHILD, ns.path],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"] == {"net": False, "kernel": False}  # the container's view, reproduced
    assert seen["problem"] is None and seen["again"] is None
    assert seen["after"] == {"net": True, "kernel": False, "vm": False}
    assert ns.sysctl("net.ipv4.ip_forward") == "1"  # written in the namespace the thread entered
    assert Netns.from_ref("").sysctl("net.ipv4.ip_forward") == root_forward  # and not in ours
    mounts = open("/proc/self/mountinfo", encoding="utf-8").read()
    assert " /proc/sys/net " not in mounts  # nothing leaked into this (the test's) mount namespace


SECRET_CHILD = r"""
import json, os, subprocess
from ingressmesh.agent.bootstrap_secret import hide_secret_file
# A container's secret as dockerd mounts it: the file in a tmpfs of its own, bind-mounted onto
# /run/secrets/<name> (over a private /run, so the host's is untouched).
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
os.mkdir("/run/dockerd-secrets")
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/dockerd-secrets"], check=True)
with open("/run/dockerd-secrets/ingressmesh_token", "w") as handle:
    handle.write("the-cluster-secret-0123456789")
os.chmod("/run/dockerd-secrets/ingressmesh_token", 0o400)
os.mkdir("/run/secrets")
open("/run/secrets/ingressmesh_token", "w").close()
subprocess.run(["mount", "--bind", "-o", "ro", "/run/dockerd-secrets/ingressmesh_token",
                "/run/secrets/ingressmesh_token"], check=True)
problem = hide_secret_file("/run/secrets/ingressmesh_token")
with open("/run/secrets/ingressmesh_token") as handle:
    seen = handle.read()
print(json.dumps({"problem": problem, "seen": seen, "host_file": hide_secret_file("/etc/hostname")}))
"""


def test_the_cluster_secret_file_is_covered_in_the_container_only():
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SECRET_CHILD],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["problem"] is None and seen["seen"] == ""  # /dev/null over it
    assert "not a Docker secret" in seen["host_file"]  # a host file is never covered
    assert not os.path.exists("/run/secrets/ingressmesh_token")  # nothing of it reached this namespace
