"""The CLI against real namespaces: apply, show, cleanup (ours only), bad input untouched."""
import json
import subprocess
import sys

import pytest

from ingressmesh.testbed import traffic
from ingressmesh.testbed.cluster import WEB_VIP

pytestmark = pytest.mark.kernel
DEMO = "examples/demo-cluster.json"


def _cli(*argv, check=True):
    proc = subprocess.run([sys.executable, "-m", "ingressmesh", *argv], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _layout(bed, i):
    return ["--host-netns", bed.node_ns(i), "--ingress-netns", bed.ingress_ns(i), "--lb-netns", bed.lb_ns(i)]


def _nft(ns, *argv):
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *argv], capture_output=True, text=True, timeout=60)


def test_apply_show_cleanup_through_the_cli(testbed):
    bed = testbed
    _nft(bed.lb_ns(1), "add", "table", "ip", "someone_else")  # not ours: must survive cleanup
    for i in (1, 2):
        out = _cli("apply", "--cluster", DEMO, "--node", f"node{i}", *_layout(bed, i)).stdout
        assert "lb:appnet00000001: full sync" in out
    again = _cli("apply", "--cluster", DEMO, "--node", "node1", *_layout(bed, 1)).stdout
    assert "full sync" in again  # a new process rebuilds atomically; same content
    assert set(traffic.tcp_spread(bed.client_ns(1), WEB_VIP, 80, 60)) == {"t1", "t2", "t3"}

    shown = json.loads(_cli("show", "--netns", bed.lb_ns(1), "--json").stdout)
    rows = shown[f"/run/netns/{bed.lb_ns(1)}"]
    web = next(r for r in rows if r["service"] == "web")
    assert web["frontend"] == "10.0.1.2 (tcp+udp, all ports)"
    assert [b["address"] for b in web["backends"]] == ["10.0.1.11", "10.0.1.12", "10.0.1.13"]
    empty = next(r for r in rows if r["service"] == "empty")
    assert empty["backends"] == [] and "refused" in empty["note"]
    table = _cli("show", "--netns", bed.ingress_ns(2)).stdout
    assert "tcp/8080" in table and "10.255.0.13:80" in table

    namespaces = [bed.node_ns(i) for i in (1, 2)] + [bed.ingress_ns(i) for i in (1, 2)] + [bed.lb_ns(i) for i in (1, 2)]
    _cli("cleanup", *[arg for ns in namespaces for arg in ("--netns", ns)])
    for ns in namespaces:
        assert _nft(ns, "list", "table", "ip", "ingressmesh").returncode != 0, ns
    assert _nft(bed.lb_ns(1), "list", "table", "ip", "someone_else").returncode == 0
    _nft(bed.lb_ns(1), "delete", "table", "ip", "someone_else")


def test_bad_cluster_file_leaves_the_kernel_untouched(testbed, tmp_path):
    bed = testbed
    data = json.load(open(DEMO, encoding="utf-8"))
    data["tasks"][0]["addresses"][0]["address"] = "10.255.0.999"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    before = _nft(bed.ingress_ns(1), "list", "ruleset").stdout
    proc = _cli("apply", "--cluster", str(bad), "--node", "node1", *_layout(bed, 1), check=False)
    assert proc.returncode != 0
    assert "tasks[0].addresses[0].address: '10.255.0.999' is not an IPv4 address" in proc.stderr
    assert _nft(bed.ingress_ns(1), "list", "ruleset").stdout == before


def test_doctor_reports_every_capability_and_checks_nft_for_real():
    from ingressmesh.doctor import run_checks
    checks = {c.name: c for c in run_checks()}
    assert set(checks) == {"nftables", "IPVS", "conntrack", "ip_forward (this namespace)", "VXLAN"}
    assert checks["nftables"].ok, checks["nftables"].detail  # every rule shape passed `nft -c`
    assert checks["VXLAN"].ok and checks["conntrack"].ok
    ipvs_present = subprocess.run(["test", "-e", "/proc/net/ip_vs"]).returncode == 0
    assert checks["IPVS"].ok == ipvs_present, checks["IPVS"].detail  # this kernel: no IPVS
    out = _cli("doctor").stdout
    for name in checks:
        assert name.split(" ")[0] in out


def test_a_fresh_process_still_forgets_connections_to_tasks_gone_since(testbed, tmp_path):
    """`ingressmesh apply` is a new process each time (so is a restarted agent): its first
    apply reads the old table once, so connections to a task that left are still cut."""
    bed = testbed
    for i in (1, 2):
        _cli("apply", "--cluster", DEMO, "--node", f"node{i}", *_layout(bed, i))
    for _ in range(200):
        sock, name = traffic.open_tcp(bed.client_ns(1), WEB_VIP, 80)
        if name == "t2":
            break
        sock.close()
    else:
        raise AssertionError("never reached t2")
    with sock:
        data = json.load(open(DEMO, encoding="utf-8"))
        next(t for t in data["tasks"] if t["id"] == "t2")["current_state"] = "failed"
        gone = tmp_path / "t2-failed.json"
        gone.write_text(json.dumps(data))
        _cli("apply", "--cluster", str(gone), "--node", "node1", *_layout(bed, 1))
        flows = subprocess.run(["ip", "netns", "exec", bed.lb_ns(1), "conntrack", "-L", "--reply-src", "10.0.1.12"],
                               capture_output=True, text=True, timeout=30).stdout
        assert "src=" not in flows, flows
        with pytest.raises(OSError):
            traffic.exchange(sock, "still there?")
    assert set(traffic.tcp_spread(bed.client_ns(1), WEB_VIP, 80, 60)) == {"t1", "t3"}


def test_show_and_cleanup_name_a_missing_namespace():
    for argv in (("show", "--netns", "imns-missing"), ("cleanup", "--netns", "imns-missing")):
        proc = _cli(*argv, check=False)
        assert proc.returncode != 0 and "imns-missing does not exist" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_bad_lb_template_and_missing_ingress_leave_the_host_alone(testbed):
    bed = testbed
    before = _nft(bed.node_ns(2), "list", "ruleset").stdout
    proc = _cli("apply", "--cluster", DEMO, "--node", "node2", "--host-netns", bed.node_ns(2),
                "--ingress-netns", bed.ingress_ns(2), "--lb-netns", "lb_{bogus}", check=False)
    assert proc.returncode != 0 and "--lb-netns 'lb_{bogus}'" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("apply", "--cluster", DEMO, "--node", "node2", "--host-netns", bed.node_ns(2),
                "--ingress-netns", "imns-missing", "--lb-netns", bed.lb_ns(2), check=False)
    assert proc.returncode != 0 and "ingress namespace it forwards to is missing" in proc.stderr
    assert _nft(bed.node_ns(2), "list", "ruleset").stdout == before
