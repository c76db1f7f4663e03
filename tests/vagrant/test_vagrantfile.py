"""The Vagrantfile is valid for both providers it names: libvirt (the lab here) and VirtualBox
(laptops). Without VirtualBox installed, its provider is made usable for `vagrant validate` by a
VBoxManage that only reports a version: the provider's config is validated all the same (an
unknown `vb.` setting fails). Needs vagrant, not the lab."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO


def validate(tmp_path, provider: str, **env) -> subprocess.CompletedProcess:
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed (apt-get install vagrant vagrant-libvirt)")
    path = os.environ["PATH"]
    (tmp_path / "state" / "share").mkdir(parents=True, exist_ok=True)  # `scripts/vagrant-lab prepare` makes it
    if provider == "virtualbox" and shutil.which("VBoxManage") is None:
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "VBoxManage").write_text('#!/bin/sh\n[ "$1" = --version ] && echo 7.0.14r161095\nexit 0\n')
        (shim / "VBoxManage").chmod(0o755)
        path = f"{shim}:{path}"
    full = dict(os.environ, PATH=path, VAGRANT_CWD=str(REPO / "vagrant"), VAGRANT_DEFAULT_PROVIDER=provider,
                VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_HOME=str(tmp_path / "vagrant.d"),
                IMVAG_STATE=str(tmp_path / "state"))
    full.update(env)
    return subprocess.run(["vagrant", "validate"], capture_output=True, text=True, timeout=180, env=full)


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrantfile_validates(tmp_path, provider):
    proc = validate(tmp_path, provider)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_vagrantfile_needs_the_share_folder(tmp_path):
    proc = validate(tmp_path, "libvirt", IMVAG_STATE=str(tmp_path / "nowhere"))
    assert proc.returncode != 0
    assert "scripts/vagrant-lab prepare" in proc.stdout + proc.stderr


def test_vagrantfile_refuses_a_bad_node_count(tmp_path):
    proc = validate(tmp_path, "libvirt", IMVAG_NODES="0")
    assert proc.returncode != 0
    assert "IMVAG_NODES must be between 1 and 9" in proc.stdout + proc.stderr
