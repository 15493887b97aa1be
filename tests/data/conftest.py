"""Fixtures for the data tests: a small dataset written once per session (see lerobot_toy.py)."""

from __future__ import annotations

import pytest

from .lerobot_toy import write_dataset


@pytest.fixture(scope="session")
def written_dataset(tmp_path_factory):
    """Path of the session's dataset (3 episodes, a video and an image camera). Copy it before damaging it."""
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "toy")
