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


def _tars(cache, *keys):
    """The cached tarball of each image, as images.ensure names them."""
    return {key: images.cache_path(cache, key) for key in keys}


def _finish(path):
    """A store file as store_builder leaves it: a tarball of image/ and overlay2/."""
    source = path + ".src"
    _store(source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_store.pack(source, path)


def test_a_finished_store_is_found_for_exactly_its_images_in_any_order(named, tmp_path):
    cache = str(tmp_path / "cache")
    path = image_store.store_path(cache, _tars(cache, "proxy", "busybox"))
    assert image_store.find(cache, _tars(cache, "busybox", "proxy")) is None
    _finish(path)
    assert image_store.find(cache, _tars(cache, "busybox", "proxy")) == path
    assert image_store.find(cache, _tars(cache, "proxy", "busybox", "proxy")) == path
    assert image_store.find(cache, _tars(cache, "busybox",)) is None
    assert image_store.find(cache, _tars(cache, "busybox", "python", "proxy")) is None
    assert image_store.find(cache, {}) is None


def test_a_store_unpacks_its_image_store_and_nothing_else_into_a_fresh_data_root(named, tmp_path):
    cache = str(tmp_path / "cache")
    path = image_store.store_path(cache, _tars(cache, "busybox",))
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
    before = image_store.store_path(cache, _tars(cache, "busybox",))
    _finish(before)
    hashes["busybox"] = "b2"
    assert image_store.store_path(cache, _tars(cache, "busybox",)) != before
    assert image_store.find(cache, _tars(cache, "busybox",)) is None
    hashes["busybox"] = "b1"
    binary.write_text("v2, a longer binary")
    assert image_store.find(cache, _tars(cache, "busybox",)) is None


def test_no_dockerd_means_no_store(named, tmp_path):
    _, binary = named
    binary.unlink()
    assert image_store.find(str(tmp_path), _tars(str(tmp_path), "busybox",)) is None


def test_stores_of_other_image_sets_have_other_prefixes(named, tmp_path):
    guest, host = image_store.store_name(_tars("/c", "proxy", "busybox")), image_store.store_name(_tars("/c", "busybox", "python", "proxy"))
    assert guest.startswith(image_store.store_prefix(("busybox", "proxy")))
    assert not host.startswith(image_store.store_prefix(("busybox", "proxy")))


class _BuilderLab:
    """Stands in for the builder's one-node lab (the real one needs root and dockerd): `up`
    runs `during_up`, as Lab.up would build images whose sources changed meanwhile."""
    during_up = staticmethod(lambda: None)

    def __init__(self, config, log=None):
        self.config = config

    def up(self):
        self.during_up()
        os.makedirs(os.path.join(self.config.data_root(1), "image"), exist_ok=True)
        os.makedirs(os.path.join(self.config.data_root(1), "overlay2"), exist_ok=True)

    def down(self, grace=1.0):
        return {"kept": []}


def test_a_store_is_stored_under_the_name_its_sources_had_when_it_was_built(named, tmp_path, monkeypatch):
    from ingressmesh.lab import store_builder
    monkeypatch.setattr(store_builder, "BUILDER", dict(store_builder.BUILDER, lab_dir=str(tmp_path / "lab")))
    monkeypatch.setattr(store_builder, "Lab", _BuilderLab)
    monkeypatch.setattr(images, "ensure", lambda cache, key, log: images.cache_path(cache, key))
    cache = str(tmp_path / "cache")
    built = store_builder.ensure_store(("busybox",), cache, log=lambda msg: None)
    assert built == image_store.find(cache, _tars(cache, "busybox",))
    assert not [name for name in os.listdir(cache) if name.endswith(".tmp")]  # no staging dir left


def test_sources_changed_during_the_build_store_nothing(named, tmp_path, monkeypatch):
    from ingressmesh.lab import store_builder
    hashes, _ = named
    monkeypatch.setattr(store_builder, "BUILDER", dict(store_builder.BUILDER, lab_dir=str(tmp_path / "lab")))
    monkeypatch.setattr(_BuilderLab, "during_up", staticmethod(lambda: hashes.update(busybox="b9")))
    monkeypatch.setattr(store_builder, "Lab", _BuilderLab)
    monkeypatch.setattr(images, "ensure", lambda cache, key, log: images.cache_path(cache, key))
    cache = str(tmp_path / "cache")
    with pytest.raises(images.ImageError, match="sources changed during the image store's build"):
        store_builder.ensure_store(("busybox",), cache, log=lambda msg: None)
    assert [name for name in os.listdir(cache) if name.startswith("store-")] == []
