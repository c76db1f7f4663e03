"""Rootless tests of `ingressmesh doctor`'s logic.

Nothing here reaches the kernel: the subprocess runner is replaced by a fake that records what
would have run and refuses anything privileged, and os.geteuid is faked in both directions, so
these behave the same whether pytest runs as root or not.
"""
from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from ingressmesh import doctor
from ingressmesh.cli import main

NFT_VERSION = "nftables v1.0.6 (Lester Gooch #5)"


class FakeRunner:
    """Stands in for doctor._run: answers `nft --version`; any other command gets the (returncode,
    stderr) of the `answers` key it starts with, and a command with no answer fails the test."""

    def __init__(self, answers: dict | None = None):
        self.answers = answers or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
        self.calls.append(list(argv))
        if argv == ["nft", "--version"]:
            return subprocess.CompletedProcess(argv, 0, NFT_VERSION + "\n", "")
        for prefix, (code, stderr) in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, code, "", stderr)
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def tools_present(monkeypatch):
    """nft and ip look installed, whether or not they are on this machine."""
    monkeypatch.setattr(doctor, "_which", lambda name: f"/usr/sbin/{name}")


def as_user(monkeypatch, uid: int) -> None:
    monkeypatch.setattr(doctor.os, "geteuid", lambda: uid)


def test_rootless_nft_check_says_it_needs_root_and_never_runs_the_dry_run(monkeypatch, tools_present):
    as_user(monkeypatch, 1000)
    runner = FakeRunner()  # any command but `nft --version` would raise
    monkeypatch.setattr(doctor, "_run", runner)
    check = doctor.check_nft()
    assert check.needs_root and not check.ok and check.status == "needs root"
    assert doctor.NEEDS_ROOT in check.detail and NFT_VERSION in check.detail
    assert "lacks" not in check.meaning and "cannot work" not in check.meaning
    assert runner.calls == [["nft", "--version"]]


def test_rootless_vxlan_check_says_it_needs_root_and_creates_no_namespace(monkeypatch, tools_present):
    as_user(monkeypatch, 1000)
    runner = FakeRunner()
    monkeypatch.setattr(doctor, "_run", runner)
    check = doctor.check_vxlan()
    assert check.needs_root and not check.ok
    assert doctor.NEEDS_ROOT in check.detail
    assert runner.calls == []


def test_nft_refusal_as_root_blames_the_kernel(monkeypatch, tools_present):
    as_user(monkeypatch, 0)
    error = "Error: Could not process rule: No such file or directory\nadd rule ip t c numgen random mod 3"
    runner = FakeRunner({("nft", "-c", "-f"): (1, error)})
    monkeypatch.setattr(doctor, "_run", runner)
    check = doctor.check_nft()
    assert not check.ok and not check.needs_root and check.status == "no"
    assert check.detail.startswith(f"{NFT_VERSION}: rules refused: Error: Could not process rule")
    assert "this kernel lacks nat/fib/numgen support" in check.meaning
    assert runner.calls[-1] == ["nft", "-c", "-f", "-"]


def test_nft_dry_run_sends_each_set_once(monkeypatch, tools_present):
    as_user(monkeypatch, 0)
    sent = []

    def runner(argv, stdin=""):
        if argv == ["nft", "--version"]:
            return subprocess.CompletedProcess(argv, 0, NFT_VERSION, "")
        sent.append(stdin)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(doctor, "_run", runner)
    check = doctor.check_nft()
    assert check.ok and not check.needs_root
    (script,) = sent
    declarations = [line.split()[:2] for line in script.splitlines() if line.split()[:1] in (["set"], ["map"])]
    assert ["map", "vip_backends"] in declarations
    assert len(declarations) == len({tuple(d) for d in declarations})
    for role in ("host", "ingress", "lb"):
        assert f"chain {role}_prerouting" in script


def test_privilege_refusal_as_root_is_not_a_kernel_failure(monkeypatch, tools_present):
    """Root without CAP_NET_ADMIN (e.g. an unprivileged container) cannot check either."""
    as_user(monkeypatch, 0)
    runner = FakeRunner({("nft", "-c", "-f"): (1, "Error: Could not process rule: Operation not permitted"),
                         ("ip", "netns", "add"): (1, 'mount --make-shared /run/netns failed: Operation not permitted')})
    monkeypatch.setattr(doctor, "_run", runner)
    nft, vxlan = doctor.check_nft(), doctor.check_vxlan()
    assert nft.needs_root and "lacks" not in nft.meaning
    assert vxlan.needs_root and not vxlan.ok


def test_vxlan_failure_as_root_is_reported_and_the_scratch_namespace_removed(monkeypatch, tools_present):
    as_user(monkeypatch, 0)
    runner = FakeRunner({("ip", "netns", "add"): (0, ""),
                         ("ip", "-n"): (2, "Error: Unknown device type."),
                         ("ip", "netns", "del"): (0, "")})
    monkeypatch.setattr(doctor, "_run", runner)
    check = doctor.check_vxlan()
    assert not check.ok and not check.needs_root
    assert check.detail == "Error: Unknown device type."
    added, link, deleted = runner.calls
    name = added[3]
    assert added == ["ip", "netns", "add", name] and deleted == ["ip", "netns", "del", name]
    assert link[:5] == ["ip", "-n", name, "link", "add"] and "vxlan" in link


def test_missing_tools_are_reported_without_running_anything(monkeypatch):
    monkeypatch.setattr(doctor, "_which", lambda name: None)
    monkeypatch.setattr(doctor, "_run", FakeRunner())
    for uid in (0, 1000):
        as_user(monkeypatch, uid)
        assert doctor.check_nft().detail == "nft not installed"
        assert doctor.check_vxlan().detail == "ip not installed"


def test_ipvs_check_says_which_backend_auto_picks(monkeypatch):
    from ingressmesh.dataplane import backends
    monkeypatch.setattr(backends, "ipvs_available", lambda: (True, "/proc/net/ip_vs present"))
    check = doctor.check_ipvs()
    assert check.ok and check.meaning == ("the ipvs backend can run here; "
                                          "auto picks ipvs: /proc/net/ip_vs present")
    monkeypatch.setattr(backends, "ipvs_available", lambda: (False, "no IPVS in this kernel (NetlinkError)"))
    check = doctor.check_ipvs()
    assert not check.ok and "auto picks nftables: no IPVS in this kernel" in check.meaning


def test_dedupe_sets_keeps_the_first_declaration_of_each_set():
    script = (
        "table ip t {\n"
        "  set published { type inet_proto . inet_service; }\n"
        "  map vip_services { type ipv4_addr : verdict; }\n"
        "  chain a_prerouting { type nat hook prerouting priority dstnat; }\n"
        "  set published { type inet_proto . inet_service; }\n"
        "  set published { type ipv4_addr; }\n"
        "  map vip_services { type ipv4_addr : verdict; }\n"
        "  set vip_rejects { type ipv4_addr; }\n"
        "  chain b_prerouting { type nat hook prerouting priority dstnat; }\n"
        "}\n")
    assert doctor._dedupe_sets(script) == (
        "table ip t {\n"
        "  set published { type inet_proto . inet_service; }\n"
        "  map vip_services { type ipv4_addr : verdict; }\n"
        "  chain a_prerouting { type nat hook prerouting priority dstnat; }\n"
        "  set vip_rejects { type ipv4_addr; }\n"
        "  chain b_prerouting { type nat hook prerouting priority dstnat; }\n"
        "}\n")


def test_dedupe_sets_leaves_rules_that_mention_maps_alone():
    rule = "  chain pick_vip_3 { dnat ip to ip daddr . numgen random mod 3 map @vip_backends; }"
    script = f"table ip t {{\n{rule}\n{rule.replace('pick_vip_3', 'pick_vip_4')}\n}}\n"
    assert doctor._dedupe_sets(script) == script


def _fake_checks(monkeypatch, *checks: doctor.Check) -> None:
    monkeypatch.setattr(doctor, "CHECKS", tuple((lambda c=c: c) for c in checks))


def test_doctor_command_rootless_exits_non_zero_asking_for_root(monkeypatch):
    _fake_checks(monkeypatch,
                 doctor.Check("nftables", False, "dry run " + doctor.NEEDS_ROOT, "m", needs_root=True),
                 doctor.Check("IPVS", False, "not available", "m"),
                 doctor.Check("VXLAN", False, doctor.NEEDS_ROOT, "m", needs_root=True))
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code != 0
    assert "run as root" in result.output
    assert "nftables, VXLAN: not checked" in result.output


def test_doctor_command_exit_status(monkeypatch):
    ok = doctor.Check("VXLAN", True, "d", "m")
    _fake_checks(monkeypatch, doctor.Check("IPVS", False, "not available", "m"),
                 doctor.Check("nftables", True, "accepted", "m"), ok)
    assert CliRunner().invoke(main, ["doctor"]).exit_code == 0
    _fake_checks(monkeypatch, doctor.Check("IPVS", True, "present", "m"),
                 doctor.Check("nftables", False, "rules refused", "m"), ok)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1 and "run as root" not in result.output


def test_tools_in_sbin_are_found_with_a_non_root_path(monkeypatch):
    """Debian's non-root PATH has no /usr/sbin, where nft, conntrack and ip live."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert doctor._search_path().split(":")[:2] == ["/usr/bin", "/bin"]
    assert {"/usr/sbin", "/sbin"} <= set(doctor._search_path().split(":"))
