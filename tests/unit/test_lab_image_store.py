"""The lab copies the first node's image store to the others instead of importing per node, and
starts every node on a ready store from the cache when one matches its images exactly."""
import os

import pytest

from ingressmesh.lab import image_store, images


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


@pytest.fixture
def named(monkeypatch, tmp_path):
    """Store names from fake recipe hashes and a fake dockerd binary (no busybox or docker needed)."""
    hashes = {"busybox": "b1", "python": "p1", "proxy": "x1"}
    monkeypatch.setattr(images, "recipe_hash", lambda key: hashes[key])
    binary = tmp_path / "dockerd"
    binary.write_text("v1")
    monkeypatch.setattr(image_store, "DOCKERD", str(binary))
    return hashes, binary


def _finish(path):
    """A store file as store_builder leaves it: a tarball of image/ and overlay2/."""
    source = path + ".src"
    _store(source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_store.pack(source, path)


def test_a_finished_store_is_found_for_exactly_its_images_in_any_order(named, tmp_path):
    cache = str(tmp_path / "cache")
    path = image_store.store_path(cache, ("proxy", "busybox"))
    assert image_store.find(cache, ("busybox", "proxy")) is None
    _finish(path)
    assert image_store.find(cache, ("busybox", "proxy")) == path
    assert image_store.find(cache, ("proxy", "busybox", "proxy")) == path
    assert image_store.find(cache, ("busybox",)) is None
    assert image_store.find(cache, ("busybox", "python", "proxy")) is None
    assert image_store.find(cache, ()) is None


def test_a_store_unpacks_its_image_store_and_nothing_else_into_a_fresh_data_root(named, tmp_path):
    cache = str(tmp_path / "cache")
    path = image_store.store_path(cache, ("busybox",))
    _finish(path)
    target = str(tmp_path / "node3" / "data")
    image_store.unpack(path, target)
    assert sorted(os.listdir(target)) == ["image", "overlay2"]
    assert open(os.path.join(target, "overlay2", "abc", "diff", "bin", "sh")).read() == "#!"
    assert os.readlink(os.path.join(target, "overlay2", "l")) == "../abc/diff"
    with pytest.raises(images.ImageError, match="data/image exists"):
        image_store.unpack(path, target)


def test_a_broken_store_is_named(named, tmp_path):
    broken = tmp_path / "store-busybox-0.tar"
    broken.write_text("not a tarball")
    with pytest.raises(images.ImageError, match="unpacking the image store .*store-busybox-0.tar"):
        image_store.unpack(str(broken), str(tmp_path / "node1"))


def test_a_changed_image_or_dockerd_names_another_store(named, tmp_path):
    hashes, binary = named
    cache = str(tmp_path / "cache")
    before = image_store.store_path(cache, ("busybox",))
    _finish(before)
    hashes["busybox"] = "b2"
    assert image_store.store_path(cache, ("busybox",)) != before
    assert image_store.find(cache, ("busybox",)) is None
    hashes["busybox"] = "b1"
    binary.write_text("v2, a longer binary")
    assert image_store.find(cache, ("busybox",)) is None


def test_no_dockerd_means_no_store(named, tmp_path):
    _, binary = named
    binary.unlink()
    assert image_store.find(str(tmp_path), ("busybox",)) is None


def test_stores_of_other_image_sets_have_other_prefixes(named, tmp_path):
    guest, host = image_store.store_name(("proxy", "busybox")), image_store.store_name(("busybox", "python", "proxy"))
    assert guest.startswith(image_store.store_prefix(("busybox", "proxy")))
    assert not host.startswith(image_store.store_prefix(("busybox", "proxy")))
