"""Datasets and checkpoints shared by the training tests (written once per session)."""

from __future__ import annotations

import os

import pytest
import torch

from xvla import XVLAPolicy

from .support import FRONT, tiny_train_config, write_dataset

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def dataset_a(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds") / "a", ds=0, lengths=(12, 9, 10), wrist=True)


@pytest.fixture(scope="session")
def dataset_b(tmp_path_factory):
    """Another robot: its camera is named differently and its state is narrower."""
    return write_dataset(
        tmp_path_factory.mktemp("ds") / "b",
        ds=1,
        lengths=(8, 11),
        camera="observation.images.top",
        state_dim=4,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer):
    """A tiny pretrained-looking checkpoint (random weights) with the session tokenizer beside it."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    XVLAPolicy(tiny_train_config(image_keys=[FRONT]), tokenizer=tokenizer).save_pretrained(path)
    return path
