"""The lab copies the first node's image store to the others instead of importing per node."""
import os

import pytest

from ingressmesh.lab import images


def _store(root):
    os.makedirs(os.path.join(root, "image", "overlay2", "imagedb"))
    os.makedirs(os.path.join(root, "overlay2", "abc", "diff", "bin"))
    with open(os.path.join(root, "overlay2", "abc", "diff", "bin", "sh"), "w") as handle:
        handle.write("#!")
    os.symlink("../abc/diff", os.path.join(root, "overlay2", "l"))
    os.makedirs(os.path.join(root, "swarm"))  # not part of the image store


def test_the_image_store_and_nothing_else_is_copied(tmp_path):
    source, target = str(tmp_path / "node1"), str(tmp_path / "node2" / "data")
    _store(source)
    images.copy_image_store(source, target)
    assert sorted(os.listdir(target)) == ["image", "overlay2"]
    assert open(os.path.join(target, "overlay2", "abc", "diff", "bin", "sh")).read() == "#!"
    assert os.readlink(os.path.join(target, "overlay2", "l")) == "../abc/diff"


def test_a_data_root_that_has_a_store_already_is_refused_by_name(tmp_path):
    source, target = str(tmp_path / "node1"), str(tmp_path / "node2")
    _store(source)
    os.makedirs(os.path.join(target, "image"))
    with pytest.raises(images.ImageError, match="node2/image exists"):
        images.copy_image_store(source, target)


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(images.ImageError, match="copying .*nowhere/image"):
        images.copy_image_store(str(tmp_path / "nowhere"), str(tmp_path / "node2"))
