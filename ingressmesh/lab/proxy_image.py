"""The lab's offline image of the L7 proxy service (imlab/proxy, docker/proxy/Dockerfile with a
registry), in two cached layers so that editing ingressmesh's code does not re-run debootstrap:

  proxy-base-<hash>.tar  debootstrap (python3, haproxy, ca-certificates), stripped like the
                         python image; the hash covers the debootstrap args, STRIP, RECIPE_VERSION
  proxy-<hash>.tar       a copy of the base with an overlay appended (tar -rf, owned 0:0): the
                         ingressmesh wheel and its dependencies (from PyPI) in Debian's
                         /usr/local/lib/python3.11/dist-packages, and /usr/local/bin/ingressmesh;
                         the hash also covers every *.py under ingressmesh/, setup.cfg and
                         pyproject.toml (content, sorted by path)

The overlay is built from a snapshot of those sources taken under the cache lock and named after
the snapshot's hash, so a tarball always holds the code its name says (even while files change)."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys

from . import images
from .images import ImageError

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../ingressmesh
REPO_ROOT = os.path.dirname(PACKAGE_DIR)
PROJECT_FILES = ("setup.cfg", "pyproject.toml")  # hashed with ingressmesh/**/*.py
BUILD_ONLY_FILES = ("README.md",)                 # the wheel's long_description, not hashed
# The same image runs the agent (nft, iptables, conntrack, ipvsadm, ip, nsenter from util-linux),
# the controller and the proxy (haproxy): one image for the whole stack (deploy/ingressmesh-stack.yml).
DEBOOTSTRAP_ARGS = ("--variant=minbase",
                    "--include=python3,haproxy,ca-certificates,nftables,iptables,conntrack,ipvsadm,iproute2",
                    "bookworm")
PY_VERSION = "3.11"  # bookworm's python3
SITE = f"usr/local/lib/python{PY_VERSION}/dist-packages"  # on Debian's python3 sys.path
WRAPPER = "usr/local/bin/ingressmesh"
WRAPPER_TEXT = '#!/bin/sh\nexec python3 -m ingressmesh "$@"\n'
KEEP = 3  # newest proxy-<hash>.tar files kept (every code change makes one; bases are kept)
PIP_TIMEOUT = 900


def platform_tag(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    if machine not in ("x86_64", "aarch64"):
        raise ImageError(f"no manylinux wheels for {machine}: the proxy image needs x86_64 "
                         "or aarch64")
    return f"manylinux2014_{machine}"


def source_files(src_root: str) -> list[str]:
    """Paths (relative to src_root, sorted) whose content the proxy image's hash covers."""
    found = [os.path.relpath(os.path.join(dirpath, name), src_root)
             for dirpath, dirnames, names in os.walk(os.path.join(src_root, "ingressmesh"))
             for name in names if name.endswith(".py")]
    found += [name for name in PROJECT_FILES if os.path.exists(os.path.join(src_root, name))]
    return sorted(found)


def sources_hash(src_root: str, copy_to: str | None = None) -> str:
    """Hash of source_files(src_root); with copy_to, also a snapshot of exactly the bytes
    hashed (plus BUILD_ONLY_FILES) there, to build from."""
    digest = hashlib.sha256()
    for rel in source_files(src_root):
        with open(os.path.join(src_root, rel), "rb") as handle:
            data = handle.read()
        digest.update(f"{rel}\0{len(data)}\0".encode() + data)
        if copy_to:
            os.makedirs(os.path.dirname(os.path.join(copy_to, rel)), exist_ok=True)
            with open(os.path.join(copy_to, rel), "wb") as handle:
                handle.write(data)
    if copy_to:
        for rel in BUILD_ONLY_FILES:
            if os.path.exists(os.path.join(src_root, rel)):
                shutil.copyfile(os.path.join(src_root, rel), os.path.join(copy_to, rel))
    return digest.hexdigest()


def recipe_hash(key: str, src_root: str | None = None, src_hash: str | None = None) -> str:
    """The hash in the cache file name of "proxy-base" or "proxy" (sources: src_root, by
    default REPO_ROOT, or their src_hash)."""
    digest = hashlib.sha256(f"{images.RECIPE_VERSION}\0proxy-base\0".encode()
                            + " ".join(DEBOOTSTRAP_ARGS).encode() + repr(images.STRIP).encode())
    if key == "proxy":
        src_hash = src_hash or sources_hash(src_root or REPO_ROOT)
        digest = hashlib.sha256(f"{images.RECIPE_VERSION}\0proxy\0{digest.hexdigest()}\0"
                                f"{src_hash}\0{PY_VERSION}\0{SITE}\0{platform_tag()}\0"
                                f"{WRAPPER_TEXT}".encode())
    return digest.hexdigest()[:16]


def base_rootfs(root: str, log) -> None:
    images.debootstrap(root, DEBOOTSTRAP_ARGS, f"{images.PROXY_IMAGE} (base)", log)


def ensure(cache_dir: str, log=print) -> str:
    """The cached proxy tarball for the current sources, building the missing layers."""
    target = images.cache_path(cache_dir, "proxy")
    if os.path.exists(target):
        return target
    base = images.ensure(cache_dir, "proxy-base", log)
    with images.building(cache_dir) as work:
        src = os.path.join(work, "src")
        src_hash = sources_hash(REPO_ROOT, copy_to=src)
        target = os.path.join(cache_dir, f"proxy-{recipe_hash('proxy', src_hash=src_hash)}.tar")
        if os.path.exists(target):
            return target
        log(f"building {images.PROXY_IMAGE}: ingressmesh and its dependencies over the base")
        overlay = os.path.join(work, "overlay")
        build_overlay(src, overlay, work)
        tmp_tar = os.path.join(work, "image.tar")
        shutil.copyfile(base, tmp_tar)
        # docker import refuses a tar holding one path twice: append only what the base lacks
        # (the overlay's parent directories, e.g. ./usr/local/bin, are already in it).
        listing = os.path.join(work, "append.list")
        with open(listing, "w", encoding="utf-8") as handle:
            handle.writelines(p + "\n" for p in _new_paths(base, overlay))
        _run(["tar", "-rf", tmp_tar, "-C", overlay, "--numeric-owner", "--owner=0", "--group=0",
              "--mode=go-w,a+rX", "--no-recursion", "-T", listing], "appending the overlay", 600)
        os.replace(tmp_tar, target)
        _prune(cache_dir, keep=target)
    return target


def _new_paths(base: str, overlay: str) -> list[str]:
    """Every path under `overlay` (as ./relative, parents first) that the base tarball lacks."""
    listed = subprocess.run(["tar", "-tf", base], capture_output=True, text=True, check=True, timeout=300).stdout
    in_base = {line.rstrip("/") for line in listed.splitlines()}
    found = []
    for root, dirs, files in os.walk(overlay):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = "./" + os.path.relpath(os.path.join(root, name), overlay)
            if path not in in_base:
                found.append(path)
    return found


def build_overlay(src: str, overlay: str, work: str) -> None:
    """overlay/SITE: the wheel of the project in `src` and its dependencies; overlay/WRAPPER."""
    wheels = os.path.join(work, "wheels")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, src],
         "pip wheel ingressmesh", PIP_TIMEOUT)
    built = glob.glob(os.path.join(wheels, "ingressmesh-*.whl"))
    if len(built) != 1:
        raise ImageError(f"pip wheel made {built or 'no ingressmesh wheel'} in {wheels}")
    site = os.path.join(overlay, SITE)
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", site,
          "--platform", platform_tag(), "--python-version", PY_VERSION, "--implementation", "cp",
          "--only-binary=:all:", built[0]], "pip install --target", PIP_TIMEOUT)
    # Console scripts name the host's interpreter in their #! line: the wrapper replaces them.
    shutil.rmtree(os.path.join(site, "bin"), ignore_errors=True)
    images._write(os.path.join(overlay, WRAPPER), WRAPPER_TEXT, 0o755)


def _run(argv: list[str], what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = "".join(part.decode("utf-8", "replace") if isinstance(part, bytes) else part
                      for part in (err.stdout, err.stderr) if part)
        raise ImageError(f"{what}: timed out after {timeout:.0f} s:\n{out[-2000:]}") from None
    if proc.returncode != 0:
        raise ImageError(f"{what} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def _prune(cache_dir: str, keep: str) -> None:
    """Old proxy-<hash>.tar files, all but the KEEP newest (and never `keep`)."""
    finals = [path for path in glob.glob(os.path.join(cache_dir, "proxy-*.tar"))
              if re.fullmatch(r"proxy-[0-9a-f]{16}\.tar", os.path.basename(path))]
    finals.sort(key=lambda path: os.stat(path).st_mtime, reverse=True)
    for path in finals[KEEP:]:
        if path != keep:
            with contextlib.suppress(OSError):
                os.remove(path)
