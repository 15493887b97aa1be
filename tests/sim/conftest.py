"""Simulator tests: skipped with a clear reason where Meta-World / MuJoCo are not installed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def metaworld():
    return pytest.importorskip("metaworld", reason="metaworld is not installed: pip install 'xvla[sim]'")


def tiny_sim_policy(tokenizer, **overrides):
    """A tiny X-VLA for Meta-World rollouts: two 32 px cameras, a 4-D auto action, 24 domains."""
    from xvla import XVLAConfig, XVLAPolicy
    from xvla.config import tiny_florence_config

    fields = dict(
        hidden_size=32,
        depth=1,
        num_heads=4,
        num_domains=24,
        len_soft_prompts=2,
        dim_time=8,
        max_len_seq=200,
        chunk_size=4,
        n_action_steps=2,
        action_mode="auto",
        real_action_dim=4,
        max_action_dim=6,
        max_state_dim=8,
        florence_config=tiny_florence_config(width=24, vocab_size=300),
        tokenizer_max_length=12,
        image_size=(32, 32),
        image_keys=["observation.images.main", "observation.images.wrist"],
    )
    return XVLAPolicy(XVLAConfig(**{**fields, **overrides}), tokenizer=tokenizer)
