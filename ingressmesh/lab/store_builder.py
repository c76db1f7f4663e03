"""Builds an image store (image_store.py) with a throwaway one-node lab of its own names: its
dockerd imports the images natively, the store is packed while that dockerd idles (as `up`
copies node1's to the other nodes), then the lab goes down.  Atomic: written in a temp dir in
the cache, renamed once complete, under the cache lock."""
from __future__ import annotations

import glob
import os

from . import image_store, images
from .config import LabConfig
from .lab import Lab

# Names no other lab uses (make lab: imlab/10.77.0, tests/swarm: imtest/10.78.0 and imstack/10.74.0,
# the guest's: imipvs/10.79.0), so it can run while a developer's lab is up.
BUILDER = dict(lab_dir="/var/lib/ingressmesh/lab-store", prefix="imstore", subnet="10.76.0",
               pool="10.204.0.0/16", nodes=1, managers=1)


def ensure_store(keys, cache_dir: str = LabConfig.image_cache, log=print) -> str:
    """The store for these images, built if missing."""
    keys = tuple(sorted(set(keys)))
    found = image_store.find(cache_dir, keys)
    if found:
        return found
    for key in keys:  # outside the lock: building an image takes it too
        images.ensure(cache_dir, key, log)
    with images.building(cache_dir) as work:
        found = image_store.find(cache_dir, keys)
        if found:
            return found
        lab = Lab(LabConfig(**BUILDER, images=keys, image_cache=cache_dir), log=lambda msg: log(f"image store: {msg}"))
        lab.down(grace=0)  # what a crashed builder left
        lab.up()
        try:
            staged = os.path.join(work, "store.tar")
            image_store.pack(lab.config.data_root(1), staged)
        finally:
            lab.down(grace=1)
        target = image_store.store_path(cache_dir, keys)
        for old in glob.glob(os.path.join(cache_dir, image_store.store_prefix(keys) + "*")):
            os.unlink(old)  # stale ones of these images
        os.replace(staged, target)
        return target
