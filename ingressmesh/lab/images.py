"""The lab's offline images: built once into a cache of rootfs tarballs, imported at `up`
into the first node, whose image store the other nodes start on (no registry is reachable). A cache file's name carries a hash of its recipe, so
changing the recipe (RECIPE_VERSION, scripts, busybox binary) builds a new one. The proxy
image (ingressmesh itself, haproxy) is built in two cached layers: see proxy_image.py."""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from . import procs

RECIPE_VERSION = "1"
BUSYBOX_IMAGE = "imlab/busybox:latest"
PYTHON_IMAGE = "imlab/python:latest"
PROXY_IMAGE = "imlab/proxy:latest"
BUSYBOX_BIN = "/bin/busybox"  # from busybox-static (statically linked: runs in an empty rootfs)
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Busybox httpd as PID 1 ignores SIGTERM: a shell with a trap stops the task promptly.
BUSYBOX_SERVER = """#!/bin/sh
# Serve HTTP on ${PORT:-80}: every path answers with this container's hostname.
mkdir -p /www
hostname > /www/index.html
httpd -f -p "${PORT:-80}" -h /www &
trap 'kill $! 2>/dev/null; exit 0' TERM INT
wait
"""
PYTHON_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostname_server.py")
DEBOOTSTRAP_ARGS = ("--variant=minbase", "--include=python3-minimal", "bookworm")
STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
         "var/cache/apt", "var/lib/apt/lists", "var/log")


class ImageError(RuntimeError):
    """An image could not be built or imported."""


@dataclass(frozen=True)
class ImageSpec:
    key: str          # "busybox" / "python" / "proxy"
    tag: str
    changes: tuple    # docker import -c lines


SPECS = {
    "busybox": ImageSpec("busybox", BUSYBOX_IMAGE, (
        f"ENV {PATH_ENV}", "EXPOSE 80", 'CMD ["/usr/local/bin/hostname-httpd"]')),
    "python": ImageSpec("python", PYTHON_IMAGE, (
        f"ENV {PATH_ENV}", "ENV LINGER=3", "EXPOSE 80", 'CMD ["/usr/local/bin/hostname-server"]')),
    "proxy": ImageSpec("proxy", PROXY_IMAGE, (
        f"ENV {PATH_ENV}", "EXPOSE 80",  # docker import takes no STOPSIGNAL (SIGTERM is the default)
        'CMD ["/usr/local/bin/ingressmesh", "proxy"]')),
}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def recipe_hash(key: str) -> str:
    if key in ("proxy", "proxy-base"):
        from . import proxy_image  # it imports this module
        return proxy_image.recipe_hash(key)
    digest = hashlib.sha256(f"{RECIPE_VERSION}\0{key}\0".encode())
    if key == "busybox":
        digest.update(BUSYBOX_SERVER.encode() + _read(BUSYBOX_BIN))
    else:
        digest.update(" ".join(DEBOOTSTRAP_ARGS).encode() + repr(STRIP).encode()
                      + _read(PYTHON_SERVER))
    return digest.hexdigest()[:16]


def cache_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, f"{key}-{recipe_hash(key)}.tar")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources)."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + \
            ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            text = _read(path).decode("utf-8", "replace")
        except OSError:
            continue
        for word in text.replace("\n", " ").split():
            url = word.rstrip("/")
            if url.startswith("http") and url.endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


def _write(path: str, text: str, mode: int = 0o755) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)


def _busybox_rootfs(root: str) -> None:
    for sub in ("bin", "www", "etc", "usr/local/bin"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "tmp"), mode=0o1777)
    shutil.copy2(BUSYBOX_BIN, os.path.join(root, "bin/busybox"))
    applets = subprocess.run([BUSYBOX_BIN, "--list"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", os.path.join(root, "bin", applet))
    _write(os.path.join(root, "etc/passwd"), "root:x:0:0:root:/:/bin/sh\n", 0o644)
    _write(os.path.join(root, "etc/group"), "root:x:0:\n", 0o644)
    _write(os.path.join(root, "usr/local/bin/hostname-httpd"), BUSYBOX_SERVER)


def debootstrap(root: str, args: tuple, image: str, log) -> None:
    """A Debian rootfs in `root` (debootstrap `args`), without docs, caches and logs (STRIP)."""
    # Own mount namespace: the /proc and /sys debootstrap mounts vanish if we are interrupted.
    argv = ["unshare", "--mount", "--propagation", "private", "--", "debootstrap",
            *args, root, debian_mirror()]
    log(f"building {image}: {' '.join(argv[5:])} (once, ~30-60 s)")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise ImageError(f"debootstrap failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    for sub in STRIP:
        path = os.path.join(root, sub)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)


def _python_rootfs(root: str, log) -> None:
    debootstrap(root, DEBOOTSTRAP_ARGS, PYTHON_IMAGE, log)
    _write(os.path.join(root, "usr/local/bin/hostname-server"),
           _read(PYTHON_SERVER).decode("utf-8"))


def ensure(cache_dir: str, key: str, log=print) -> str:
    """The cached tarball for image `key` ("proxy-base" too), building it if missing (atomic:
    temp dir, rename)."""
    from . import proxy_image  # it imports this module
    if key == "proxy":
        return proxy_image.ensure(cache_dir, log)
    target = cache_path(cache_dir, key)
    if os.path.exists(target):
        return target
    with building(cache_dir) as work:
        if os.path.exists(target):
            return target
        root = os.path.join(work, "root")
        os.makedirs(root)
        if key == "busybox":
            _busybox_rootfs(root)
        elif key == "python":
            _python_rootfs(root, log)
        elif key == "proxy-base":
            proxy_image.base_rootfs(root, log)
        else:
            raise ImageError(f"unknown lab image {key!r}")
        tmp_tar = os.path.join(work, "image.tar")
        subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", tmp_tar, "."],
                       check=True, timeout=600, capture_output=True)
        os.replace(tmp_tar, target)
    return target


@contextlib.contextmanager
def building(cache_dir: str):
    """Hold the cache lock (one builder at a time; the others then find the file) and yield a
    fresh work dir in the cache dir, removed afterwards."""
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_builds(cache_dir)
        work = tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=cache_dir)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _remove_stale_builds(cache_dir: str) -> None:
    """Temp dirs of builders that died (their PID is in the name)."""
    for path in glob.glob(os.path.join(cache_dir, ".build-*")):
        pid = os.path.basename(path).split("-")[1]
        if not (pid.isdigit() and procs.alive(int(pid))) or int(pid) == os.getpid():
            shutil.rmtree(path, ignore_errors=True)


def import_argv(docker_argv: list[str], tarball: str, spec: ImageSpec) -> list[str]:
    changes = [arg for line in spec.changes for arg in ("-c", line)]
    return [*docker_argv, "import", *changes, tarball, spec.tag]


# What of a data root holds its images with the overlay2 driver: metadata and layer contents.
IMAGE_STORE = ("image", "overlay2")


def copy_image_store(from_data_root: str, to_data_root: str) -> None:
    """Gives a node that has not started its dockerd yet the images another node's dockerd
    imported, by copying that image store (nothing else of the data root: no swarm, network or
    container state).  An import costs what a copy does not (~55 s per proxy image under QEMU,
    the copy ~3 s): the lab imports once, into the first node, not once per node."""
    for name in IMAGE_STORE:
        source, target = os.path.join(from_data_root, name), os.path.join(to_data_root, name)
        if os.path.lexists(target):
            raise ImageError(f"{target} exists: a node's image store is copied only into a fresh data root")
        os.makedirs(to_data_root, exist_ok=True)
        done = subprocess.run(["cp", "-a", source, target], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise ImageError(f"copying {source} to {target}: {done.stderr.strip()}")
