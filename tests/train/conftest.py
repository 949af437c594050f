"""Fixtures for the training tests: a small *learnable* fake dataset and one shared tiny run.

The dataset comes from the package's one fake factory (:mod:`bigearthnet.dataset.fakes`,
recipe ``learnable``): the build's layout with only the columns training reads, and labels that
are a function of the RGB pixels, so both S-CNN variants can learn them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from bigearthnet.dataset.fakes import FakeDataset as LearnableDataset
from bigearthnet.dataset.fakes import write_fake_dataset

write_learnable_dataset = partial(write_fake_dataset, recipe="learnable", compression="none")


def tiny_config(dataset: Path, out: Path, **overrides):
    """A TrainConfig that trains S-CNN-RGB on the learnable dataset in a few seconds.

    With these settings (16 steps of 4 patches per epoch) the validation sample F1 rises from
    ~0.5 after epoch 1 to ~0.8 after epoch 3; the best constant prediction scores ~0.6.
    """
    from bigearthnet.train.config import TrainConfig

    base = {"dataset": str(dataset), "out": str(out), "model": "s-cnn-rgb", "epochs": 3,
            "label_set": "19", "batch_size": 4, "lr": 0.03, "momentum": 0.9, "fc_width": 16,
            "seed": 7, "num_workers": 0, "buffer_size": 32, "device": "cpu", "progress": False}
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def make_config():
    """The :func:`tiny_config` factory (test modules cannot import this conftest by name)."""
    return tiny_config


@pytest.fixture(scope="session")
def make_dataset():
    """The :func:`write_learnable_dataset` writer."""
    return write_learnable_dataset


@pytest.fixture(scope="session")
def learnable(tmp_path_factory) -> LearnableDataset:
    """The learnable dataset (shared, read-only)."""
    return write_learnable_dataset(tmp_path_factory.mktemp("learnable") / "dataset")


@pytest.fixture(scope="session")
def trained_run(learnable, tmp_path_factory) -> dict:
    """One finished 3-epoch S-CNN-RGB run (shared, read-only): train()'s result."""
    from bigearthnet.train.launch import train

    out = tmp_path_factory.mktemp("runs") / "s-cnn-rgb"
    return train(tiny_config(learnable.root, out))
