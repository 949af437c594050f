"""Fixtures for the dataset tests: small fake datasets from the package's one fake factory
(:mod:`bigearthnet.dataset.fakes`, recipe ``random``: every column, seeded random values, files
of several uneven row groups).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from bigearthnet.dataset.fakes import FakeDataset
from bigearthnet.dataset.fakes import write_fake_dataset as _write

write_fake_dataset = partial(_write, recipe="random")


@pytest.fixture(scope="session")
def fake_dataset_factory(tmp_path_factory) -> Callable[..., FakeDataset]:
    """``factory(name, **kwargs)`` writes a fake dataset into a fresh session tmp dir."""

    def factory(name: str = "ds", **kwargs) -> FakeDataset:
        return write_fake_dataset(tmp_path_factory.mktemp(name) / "dataset", **kwargs)

    return factory


@pytest.fixture(scope="session")
def fake_dataset(fake_dataset_factory) -> FakeDataset:
    """The default 3-split fake dataset (shared, read-only)."""
    return fake_dataset_factory("default")

