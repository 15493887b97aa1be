"""ServeEngine without HTTP: image-size choice, view limits, per-sample preparation."""

from __future__ import annotations

import numpy as np
import pytest

from xvla import XVLAPolicy
from xvla.serve.engine import ServeEngine
from xvla.serve.protocol import Observation

from .serve_support import serve_config


def observation(**overrides) -> Observation:
    base = dict(
        images=[np.zeros((100, 30, 3), np.uint8), np.zeros((20, 300, 3), np.uint8)],
        state=np.ones(3, np.float32),
        task="open the drawer",
        domain_id=2,
        steps=2,
        seed=1,
    )
    base.update(overrides)
    return Observation(**base)


def test_checkpoint_without_image_size_uses_the_documented_224_with_a_warning(tokenizer, caplog):
    """No silent guess: a checkpoint that declares no size gets 224x224 (Florence-2's size) and a warning,
    on every path; a model too small for it is refused with a message that names image_size."""
    with caplog.at_level("WARNING"):
        policy = XVLAPolicy(serve_config(image_size=None), tokenizer=tokenizer)
    assert "declares no image size" in caplog.text and policy.processor.image_size == (224, 224)
    sized = ServeEngine(XVLAPolicy(serve_config(image_size=(32, 32)), tokenizer=tokenizer))
    assert sized.image_size == (32, 32) == sized.policy.processor.image_size
    assert sized.describe()["views"]["image_size"] == [32, 32]
    with pytest.raises(ValueError, match="image_size"):
        ServeEngine(XVLAPolicy(serve_config(image_size=None), tokenizer=tokenizer))


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
    assert sample.image_input.shape == (1, 3, 3, 32, 32) and sample.image_mask.tolist() == [
        [True, True, False]
    ]
    assert sample.proprio.shape == (1, 8) and sample.proprio[0, 3:].abs().sum() == 0
    assert sample.batch_key == (2, 3)
    five = engine.prepare(observation(images=[np.zeros((8, 8, 3), np.uint8)] * 5))
    assert five.batch_key == (2, 5)  # more images than configured views: more slots, as XVLAPolicy does


def test_warm_up_reports_chunk_times_at_the_served_batch_sizes_and_default_steps(tokenizer):
    from xvla.serve.server import chunk_time_report

    engine = ServeEngine(XVLAPolicy(serve_config(), tokenizer=tokenizer), default_steps=3)
    seen = []
    run = engine.run
    engine.run = lambda samples: seen.append((len(samples), samples[0].steps)) or run(samples)
    engine.warmup()
    line = chunk_time_report(engine, max_batch_size=4)
    # The check chunk at 1 step, then one real forward pass per served batch size at the default steps.
    assert seen == [(1, 1), (1, 3), (4, 3)]
    assert "3 denoising steps" in line and "batch 1: " in line and "batch 4: " in line and "eager" in line
