"""ServeEngine without HTTP: image-size choice, view limits, per-sample preparation."""

from __future__ import annotations

import numpy as np
import pytest

from xvla import XVLAPolicy
from xvla.serve.engine import ServeEngine
from xvla.serve.protocol import Observation

from .serve_support import CHUNK, serve_config


def observation(**overrides) -> Observation:
    base = dict(images=[np.zeros((100, 30, 3), np.uint8), np.zeros((20, 300, 3), np.uint8)],
                state=np.ones(3, np.float32), task="open the drawer", domain_id=2, steps=2, seed=1)  # fmt: skip
    base.update(overrides)
    return Observation(**base)


def test_checkpoint_without_image_size_gets_one_size(tokenizer):
    """Frames of different sizes must stack: with no image_size the engine picks the largest size that fits."""
    engine = ServeEngine(XVLAPolicy(serve_config(image_size=None), tokenizer=tokenizer))
    assert engine.processed_image_size == (32, 32)  # 224..64 do not fit this tiny model's max_len_seq
    (chunk,) = engine.run([engine.prepare(observation())])
    assert chunk.shape == (CHUNK, 20) and np.isfinite(chunk).all()
    roomy = ServeEngine(XVLAPolicy(serve_config(image_size=None, max_len_seq=2000), tokenizer=tokenizer))
    assert roomy.processed_image_size[0] > 32 and roomy.describe()["views"]["image_size"] == list(roomy.processed_image_size)


def test_view_capacity_and_unrunnable_checkpoints(tokenizer):
    engine = ServeEngine(XVLAPolicy(serve_config(), tokenizer=tokenizer))
    assert engine.spec.max_views == 8  # capped; this model's sequence would hold more 32x32 views
    with pytest.raises(ValueError, match="cannot run"):
        ServeEngine(XVLAPolicy(serve_config(image_size=(64, 64)), tokenizer=tokenizer))
    with pytest.raises(ValueError, match="out of range"):
        ServeEngine(XVLAPolicy(serve_config(), tokenizer=tokenizer), domain_ids=[0, 99])


def test_prepare_pads_views_and_state(tokenizer):
    engine = ServeEngine(XVLAPolicy(serve_config(), tokenizer=tokenizer))
    sample = engine.prepare(observation())
    assert sample.image_input.shape == (1, 3, 3, 32, 32) and sample.image_mask.tolist() == [[True, True, False]]
    assert sample.proprio.shape == (1, 8) and sample.proprio[0, 3:].abs().sum() == 0
    assert sample.batch_key == (2, 3)
    five = engine.prepare(observation(images=[np.zeros((8, 8, 3), np.uint8)] * 5))
    assert five.batch_key == (2, 5)  # more images than configured views: more slots, as XVLAPolicy does
