"""Fixtures for the rule tests; the small swarm itself is in small_swarm.py (importable by
name: several test directories have a conftest, so `from conftest import` is ambiguous)."""
from __future__ import annotations

import pytest

from ingressmesh.nft.backend import NftBackend
from ingressmesh.nft.fake import FakeNft
from small_swarm import Swarm


@pytest.fixture
def swarm() -> Swarm:
    return Swarm()


@pytest.fixture
def fake() -> FakeNft:
    return FakeNft()


@pytest.fixture
def backend(fake: FakeNft) -> NftBackend:
    return NftBackend(fake)
