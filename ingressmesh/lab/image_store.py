"""A ready image store in the image cache: one tarball of the `image/` and `overlay2/`
directories of a dockerd that imported a set of lab images, so a lab can start every node on an
unpacked copy instead of running `docker import` at `up`.  Under QEMU the import of the proxy
image costs ~55 s or more.  One tarball, not the store's ~8,700 files, so the guest reads one
file over 9p.  `make ipvs-swarm-images` builds the store natively (store_builder.py) for the
guest.

A store's name carries the recipe hash of each image (its tarball's name) and the identity of the dockerd binary
that wrote it, so a changed image or an upgraded Docker never starts on a stale store: the lab
imports as before.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from typing import Mapping, Optional

from . import images
from .config import DOCKERD


def store_prefix(keys) -> str:
    """What every store of this set of images is named from: a newer one replaces the others."""
    return "store-" + "+".join(sorted(set(keys))) + "-"


def store_name(tarballs: Mapping[str, str]) -> str:
    """From the cached image tarballs (key -> path), whose names already carry their recipe
    hashes: naming a store costs no second hash of the sources."""
    digest = hashlib.sha256()
    for key in sorted(tarballs):
        digest.update(f"{key}={os.path.basename(tarballs[key])}\0".encode())
    info = os.stat(DOCKERD)
    digest.update(f"{DOCKERD}:{info.st_size}:{info.st_mtime_ns}".encode())
    return store_prefix(tarballs) + digest.hexdigest()[:16] + ".tar"


def store_path(cache_dir: str, tarballs: Mapping[str, str]) -> str:
    return os.path.join(cache_dir, store_name(tarballs))


def find(cache_dir: str, tarballs: Mapping[str, str]) -> Optional[str]:
    """The store for exactly these image tarballs, or None (then the lab imports them).  A store
    file exists only once complete (written aside, then renamed)."""
    if not tarballs:
        return None
    try:
        path = store_path(cache_dir, tarballs)
    except OSError:  # no dockerd binary to name it by: nothing to find
        return None
    return path if os.path.isfile(path) else None


def pack(data_root: str, target: str) -> None:
    """The image store of a data root into the tarball `target` (its dockerd may run, idle)."""
    done = subprocess.run(["tar", "-C", data_root, "--numeric-owner", "-cf", target, *images.IMAGE_STORE],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise images.ImageError(f"packing the image store of {data_root}: {done.stderr.strip()[-500:]}")


def unpack(store: str, data_root: str) -> None:
    """A fresh data root (no dockerd started on it yet) gets the store's images."""
    for name in images.IMAGE_STORE:
        if os.path.lexists(os.path.join(data_root, name)):
            raise images.ImageError(f"{os.path.join(data_root, name)} exists: a store is unpacked only into a fresh data root")
    os.makedirs(data_root, exist_ok=True)
    done = subprocess.run(["tar", "-C", data_root, "--numeric-owner", "-xf", store],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise images.ImageError(f"unpacking the image store {store} into {data_root}: {done.stderr.strip()[-500:]}")
