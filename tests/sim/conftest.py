"""Simulator tests: skipped with a clear reason where Meta-World / MuJoCo are not installed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def metaworld():
    return pytest.importorskip("metaworld", reason="metaworld is not installed: pip install 'xvla[sim]'")
