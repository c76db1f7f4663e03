"""Builds an image store (image_store.py) with a throwaway one-node lab of its own names: its
dockerd imports the images natively, the store is packed while that dockerd idles (as `up`
copies node1's to the other nodes), then the lab goes down.  Atomic: written in a temp dir in
the cache, renamed once complete.  It holds a lock of its own, not the image cache's: `up`
may build an image under that one."""
from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile

from . import image_store, images
from .config import LabConfig
from .lab import Lab

# Names no other lab uses (make lab: imlab/10.77.0, tests/swarm: imtest/10.78.0 and imstack/10.74.0,
# the guest's: imipvs/10.79.0), so it can run while a developer's lab is up.
BUILDER = dict(lab_dir="/var/lib/ingressmesh/lab-store", prefix="imstore", subnet="10.76.0",
               pool="10.204.0.0/16", nodes=1, managers=1)


@contextlib.contextmanager
def _store_lock(cache_dir: str):
    """One store builder at a time; a fresh staging dir in the cache, removed afterwards."""
    os.makedirs(cache_dir, exist_ok=True)
    with open(os.path.join(cache_dir, ".store-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in glob.glob(os.path.join(cache_dir, ".store-*.tmp")):  # a builder that died
            shutil.rmtree(stale, ignore_errors=True)
        work = tempfile.mkdtemp(prefix=".store-", suffix=".tmp", dir=cache_dir)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)


def ensure_store(keys, cache_dir: str = LabConfig.image_cache, log=print) -> str:
    """The store for these images, built if missing."""
    keys = tuple(sorted(set(keys)))
    tarballs = {key: images.ensure(cache_dir, key, log) for key in keys}
    found = image_store.find(cache_dir, tarballs)
    if found:
        return found
    with _store_lock(cache_dir) as work:
        found = image_store.find(cache_dir, tarballs)
        if found:
            return found
        target = image_store.store_path(cache_dir, tarballs)  # named before the build: see below
        lab = Lab(LabConfig(**BUILDER, images=keys, image_cache=cache_dir), log=lambda msg: log(f"image store: {msg}"))
        lab.down(grace=0)  # what a crashed builder left
        lab.up()
        staged = os.path.join(work, "store.tar")
        try:
            image_store.pack(lab.config.data_root(1), staged)
        finally:
            kept = lab.down(grace=1)["kept"]
        if kept:  # shared run dirs another lab uses: the store itself is whole
            log(f"image store: its lab's teardown kept {kept}")
        if image_store.store_path(cache_dir, {key: images.cache_path(cache_dir, key) for key in keys}) != target:
            # the sources changed meanwhile
            raise images.ImageError("the lab images' sources changed during the image store's build: not stored "
                                    "(run it again)")
        for old in glob.glob(os.path.join(cache_dir, image_store.store_prefix(keys) + "*")):
            os.unlink(old)  # stale ones of these images
        os.replace(staged, target)
        return target
