"""The lab image recipes without building anything: cache names, the proxy image's two hashes
(code changes rebuild only the overlay), the docker import command. Rootless, no network."""
from __future__ import annotations

import os
import re

import pytest

from ingressmesh.lab import LabConfig, PROXY_IMAGE, images, proxy_image
from ingressmesh.lab.images import ImageError


@pytest.fixture
def src(tmp_path, monkeypatch) -> str:
    """A small project tree standing in for the repo (REPO_ROOT points at it)."""
    root = tmp_path / "src"
    (root / "ingressmesh" / "l7").mkdir(parents=True)
    (root / "ingressmesh" / "__init__.py").write_text('"""pkg"""\n')
    (root / "ingressmesh" / "l7" / "haproxy.py").write_text("TIMEOUT = 5\n")
    (root / "setup.cfg").write_text("[metadata]\nname = ingressmesh\n")
    (root / "README.md").write_text("readme\n")
    monkeypatch.setattr(proxy_image, "REPO_ROOT", str(root))
    return str(root)


def test_proxy_hash_follows_python_sources_base_hash_does_not(src):
    base, proxy = images.recipe_hash("proxy-base"), images.recipe_hash("proxy")
    with open(os.path.join(src, "ingressmesh", "l7", "haproxy.py"), "w") as handle:
        handle.write("TIMEOUT = 6\n")
    assert images.recipe_hash("proxy") != proxy
    assert images.recipe_hash("proxy-base") == base
    with open(os.path.join(src, "ingressmesh", "l7", "haproxy.py"), "w") as handle:
        handle.write("TIMEOUT = 5\n")
    assert images.recipe_hash("proxy") == proxy  # content, not mtimes


def test_proxy_hash_covers_new_files_and_setup_cfg_not_bytecode_or_readme(src):
    proxy = images.recipe_hash("proxy")
    os.makedirs(os.path.join(src, "ingressmesh", "__pycache__"))
    with open(os.path.join(src, "ingressmesh", "__pycache__", "x.cpython-311.pyc"), "wb") as fh:
        fh.write(b"\0")
    with open(os.path.join(src, "README.md"), "a") as handle:
        handle.write("more\n")
    assert images.recipe_hash("proxy") == proxy
    with open(os.path.join(src, "ingressmesh", "l7", "new.py"), "w") as handle:
        handle.write("\n")
    with_new = images.recipe_hash("proxy")
    assert with_new != proxy
    with open(os.path.join(src, "setup.cfg"), "a") as handle:
        handle.write("version = 2\n")
    assert images.recipe_hash("proxy") not in (proxy, with_new)


def test_the_snapshot_holds_the_bytes_it_hashed(src, tmp_path):
    copy = str(tmp_path / "snapshot")
    digest = proxy_image.sources_hash(src, copy_to=copy)
    assert digest == proxy_image.sources_hash(copy)
    assert proxy_image.source_files(copy) == proxy_image.source_files(src) == [
        "ingressmesh/__init__.py", "ingressmesh/l7/haproxy.py", "setup.cfg"]
    assert os.path.exists(os.path.join(copy, "README.md"))  # the wheel's long_description


def test_cache_names(src, tmp_path):
    assert re.fullmatch(r"proxy-base-[0-9a-f]{16}\.tar",
                        os.path.basename(images.cache_path(str(tmp_path), "proxy-base")))
    assert re.fullmatch(r"proxy-[0-9a-f]{16}\.tar",
                        os.path.basename(images.cache_path(str(tmp_path), "proxy")))


def test_ensure_returns_a_cached_proxy_without_building(src, tmp_path):
    target = images.cache_path(str(tmp_path), "proxy")
    open(target, "w").close()
    assert images.ensure(str(tmp_path), "proxy", log=pytest.fail) == target


def test_import_argv_carries_the_proxy_config(tmp_path):
    spec = images.SPECS["proxy"]
    argv = images.import_argv(["docker", "-H", "unix:///x.sock"], "/c/proxy.tar", spec)
    assert argv[:3] == ["docker", "-H", "unix:///x.sock"]
    assert argv[3] == "import" and argv[-2:] == ["/c/proxy.tar", PROXY_IMAGE]
    changes = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    assert 'CMD ["/usr/local/bin/ingressmesh", "proxy"]' in changes
    assert "EXPOSE 80" in changes and not any(c.startswith("STOPSIGNAL") for c in changes)  # import refuses it
    assert any(line.startswith("ENV PATH=/usr/local/sbin:") for line in changes)


def test_platform_tags():
    assert proxy_image.platform_tag("x86_64") == "manylinux2014_x86_64"
    assert proxy_image.platform_tag("aarch64") == "manylinux2014_aarch64"
    with pytest.raises(ImageError):
        proxy_image.platform_tag("riscv64")


def test_prune_keeps_the_newest_proxies_and_every_base(tmp_path):
    names = [f"proxy-{n:016x}.tar" for n in range(5)] + ["proxy-base-0123456789abcdef.tar"]
    for age, name in enumerate(reversed(names)):
        path = tmp_path / name
        path.write_text("")
        os.utime(path, (1000 - age, 1000 - age))
    proxy_image._prune(str(tmp_path), keep=str(tmp_path / names[0]))
    assert sorted(os.listdir(tmp_path)) == sorted(
        names[-1:] + names[-1 - proxy_image.KEEP:-1] + [names[0]])


def test_lab_imports_the_proxy_by_default():
    assert "proxy" in LabConfig().images
    assert set(LabConfig().images) <= set(images.SPECS)
    with pytest.raises(ValueError):
        LabConfig(images=("nginx",))


def test_an_import_timeout_out_of_range_is_refused_by_name():
    assert LabConfig().import_timeout == 300
    assert LabConfig(import_timeout=1200).import_timeout == 1200
    for bad in (0, -1, 7200):
        with pytest.raises(ValueError, match="import_timeout"):
            LabConfig(import_timeout=bad)


def test_the_wrapper_runs_the_package():
    assert proxy_image.WRAPPER_TEXT.startswith("#!/bin/sh\n")
    assert 'exec python3 -m ingressmesh "$@"' in proxy_image.WRAPPER_TEXT
