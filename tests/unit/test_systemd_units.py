"""The real unit files pass `systemd-analyze verify` cleanly; the install script lands files.

verify runs with --root on a temp tree holding the unmodified units, a stand-in executable at
/usr/local/bin/ingressmesh (verify checks ExecStart exists) and a copy of the system's own
units (sysinit.target and friends, which --root looks up inside the tree).
"""
from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("ingressmesh-agent.service", "ingressmesh-controller.service")
ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
_HAVE_ANALYZE = os.access(ANALYZE, os.X_OK) and SYSTEM_UNITS.is_dir()
if not _HAVE_ANALYZE and os.environ.get("INGRESSMESH_REQUIRE_KERNEL") == "1":
    raise RuntimeError("systemd-analyze is needed to verify the units (make test installs systemd)")
needs_analyze = pytest.mark.skipif(not _HAVE_ANALYZE, reason="systemd-analyze not installed (apt-get install systemd)")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str
    parser.read(REPO / "systemd" / name)
    return parser


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copyfile(REPO / "systemd" / name, units / name)
    exe = root / "usr/local/bin/ingressmesh"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")  # units link to /lib/systemd/system/... on Debian
    return root


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_is_clean(root, name):
    assert (root / "etc/systemd/system" / name).read_bytes() == (REPO / "systemd" / name).read_bytes()
    proc = subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no", "--generators=no", name],
                          capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys or bad values: any output at all is a finding.
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


@needs_analyze
def test_verify_would_catch_a_bad_directive(root, tmp_path):
    bad = root / "etc/systemd/system/ingressmesh-bad.service"
    bad.write_text((REPO / "systemd" / UNITS[0]).read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    try:
        proc = subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no", "--generators=no", bad.name],
                              capture_output=True, text=True, timeout=60)
    finally:
        bad.unlink()
    assert "Unknown key 'NoNewPrivilege'" in proc.stderr


@pytest.mark.parametrize("name, verb, caps", [
    ("ingressmesh-agent.service", "agent", {"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}),
    ("ingressmesh-controller.service", "controller", set()),
])
def test_unit_contract(name, verb, caps):
    service = _unit(name)["Service"]
    option = f"INGRESSMESH_{verb.upper()}_OPTS"
    assert service["ExecStart"] == f"/usr/local/bin/ingressmesh {verb} ${option}"
    assert service["EnvironmentFile"] == f"-/etc/default/ingressmesh-{verb}"
    for key, value in {"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
                       "RestartSec": "2", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelModules": "yes",
                       "ProtectControlGroups": "yes", "LockPersonality": "yes", "RestrictRealtime": "yes",
                       "SystemCallArchitectures": "native"}.items():
        assert service[key] == value, key
    assert set(service["CapabilityBoundingSet"].split()) == caps
    assert "docker.service" in _unit(name)["Unit"]["After"] and "docker.service" in _unit(name)["Unit"]["Wants"]


def test_agent_keeps_what_entering_namespaces_needs():
    service = _unit("ingressmesh-agent.service")["Service"]
    for key in ("PrivateNetwork", "ProtectKernelTunables", "RestrictNamespaces"):
        assert key not in service, key
    assert "AF_NETLINK" in service["RestrictAddressFamilies"].split()


def _install(prefix: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    return subprocess.run(["sh", str(REPO / "scripts/install-systemd.sh"), "--prefix", str(prefix),
                           "--venv", sys.prefix],
                          capture_output=True, text=True, timeout=60, env=env)


def test_install_script_into_a_prefix(tmp_path):
    first = _install(tmp_path)
    assert first.returncode == 0, first.stderr
    for name in UNITS:
        assert (tmp_path / "etc/systemd/system" / name).read_bytes() == (REPO / "systemd" / name).read_bytes()
    token = tmp_path / "etc/ingressmesh/token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32
    agent_defaults = (tmp_path / "etc/default/ingressmesh-agent").read_text()
    assert 'INGRESSMESH_AGENT_OPTS=""' in agent_defaults
    assert "INGRESSMESH_CONTROLLER_OPTS" in (tmp_path / "etc/default/ingressmesh-controller").read_text()
    link = tmp_path / "usr/local/bin/ingressmesh"
    assert link.is_symlink()
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "ingressmesh" in version.stdout
    assert "not reloading systemd" in first.stdout

    # Second run: the operator's edits and the token are kept, nothing fails.
    (tmp_path / "etc/default/ingressmesh-agent").write_text('INGRESSMESH_AGENT_OPTS="--edited"\n')
    before = token.read_text()
    second = _install(tmp_path)
    assert second.returncode == 0, second.stderr
    assert token.read_text() == before and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert (tmp_path / "etc/default/ingressmesh-agent").read_text() == 'INGRESSMESH_AGENT_OPTS="--edited"\n'
    assert "unchanged" in second.stdout and "kept" in second.stdout


def test_install_script_uses_a_given_token(tmp_path):
    source = tmp_path / "shared-token"
    source.write_text("  the-cluster-wide-token-0123456789\n")
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    proc = subprocess.run(["sh", str(REPO / "scripts/install-systemd.sh"), "--prefix", str(tmp_path / "root"),
                           "--venv", sys.prefix, "--token-file", str(source)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "root/etc/ingressmesh/token").read_text() == "the-cluster-wide-token-0123456789\n"


def test_install_script_refuses_unknown_arguments(tmp_path):
    proc = subprocess.run(["sh", str(REPO / "scripts/install-systemd.sh"), "--bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown argument: --bogus" in proc.stderr


@pytest.mark.parametrize("verb", ["agent", "controller"])
def test_option_examples_in_the_defaults_are_real_options(tmp_path, verb):
    """The TLS examples the operator copies from /etc/default/ingressmesh-* name options that exist."""
    import re
    from click.testing import CliRunner
    from ingressmesh.cli.daemons import agent_command, controller_command
    assert _install(tmp_path).returncode == 0
    text = (tmp_path / f"etc/default/ingressmesh-{verb}").read_text()
    examples = re.findall(rf'^#   INGRESSMESH_{verb.upper()}_OPTS="([^"]+)"$', text, re.M)
    assert any("https://" in e or "--tls-cert" in e for e in examples), text
    command = {"agent": agent_command, "controller": controller_command}[verb]
    help_text = CliRunner().invoke(command, ["--help"]).output
    for option in {word for example in examples for word in example.split() if word.startswith("--")}:
        assert re.search(rf"(^|[\s/]){option}\b", help_text, re.M), option
