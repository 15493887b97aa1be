"""A real server on loopback, driven the way the official X-VLA clients drive theirs."""

from __future__ import annotations

import io

import json_numpy
import numpy as np
import torch
from PIL import Image

from xvla import XVLAPolicy

from .serve_support import (
    ACTION_DIM,
    CHUNK,
    NUM_DOMAINS,
    STATE_DIM,
    STEPS,
    VIEWS,
    frame,
    official_payload,
    post_json,
)


def library_chunk(checkpoint, payload_images, state, text, domain_id, seed, steps):
    """What XVLAPolicy.predict_action_chunk gives for the same observation and noise."""
    policy = XVLAPolicy.from_pretrained(checkpoint)
    batch = {f"observation.images.image{i}": img for i, img in enumerate(payload_images)}
    batch.update({"observation.state": torch.from_numpy(state)[None], "task": [text], "domain_id": domain_id})
    noise = torch.randn((1, CHUNK, ACTION_DIM), generator=torch.Generator().manual_seed(seed))
    return policy.predict_action_chunk(batch, noise=noise, steps=steps)[0].numpy()


def test_health_and_info(http, serve_checkpoint):
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.headers["x-request-id"]
    info = http.get("/info").json()
    assert info["checkpoint"] == str(serve_checkpoint)
    assert info["action_mode"] == "ee6d" and info["action_dim"] == ACTION_DIM and info["chunk_size"] == CHUNK
    assert info["domain_ids"] == list(range(NUM_DOMAINS)) and info["proprio_dim"] == STATE_DIM
    assert info["views"]["configured"] == VIEWS and info["views"]["image_size"] == [32, 32]
    assert info["denoising_steps"] == STEPS and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["version"] and info["batching"]["max_batch_size"] == 8 and info["auth"] is False


def test_official_client_payload(http, rng):
    """requests.post(url, json=payload) with json_numpy.dumps'ed arrays, exactly as the official clients do."""
    for n_images in (1, 2, 3):
        status, body = post_json(http, "/act", official_payload(rng, n_images=n_images, steps=2))
        assert status == 200, body
        assert set(body) == {"action"}
        action = np.asarray(body["action"])
        assert action.shape == (CHUNK, ACTION_DIM) and np.isfinite(action).all()
        # ee6d postprocess: the gripper logits went through a sigmoid
        assert ((action[:, [9, 19]] >= 0) & (action[:, [9, 19]] <= 1)).all()


def test_official_variants_are_accepted(http, rng):
    """Variants seen in the official clients: list-form proprio, no steps, float64 state, extra keys."""
    payload = official_payload(rng)
    payload["proprio"] = json_numpy.dumps(rng.standard_normal(6).tolist())
    payload["t"] = 0  # unknown keys are ignored, as the official server ignores them
    assert post_json(http, "/act", payload)[0] == 200
    payload = official_payload(rng)
    payload["proprio"] = json_numpy.dumps(np.zeros(STATE_DIM, np.float64))
    payload["domain_id"] = "2"  # the official server calls int() on it
    assert post_json(http, "/act", payload)[0] == 200


def test_answer_equals_the_library(http, rng, serve_checkpoint):
    """Seeded /act (our extension) == XVLAPolicy.predict_action_chunk on the same frames and noise;
    a shorter proprio is zero-padded as the policy pads it."""
    images = [frame(rng, 60, 80), frame(rng, 32, 32)]
    state = rng.standard_normal(5).astype(np.float32)
    payload = {
        "image0": json_numpy.dumps(images[0]),
        "image1": json_numpy.dumps(images[1]),
        "proprio": json_numpy.dumps(state),
        "language_instruction": "open the drawer",
        "domain_id": 3,
        "steps": 3,
        "seed": 7,
    }
    status, body = post_json(http, "/act", payload)
    assert status == 200, body
    expected = library_chunk(serve_checkpoint, images, state, "open the drawer", 3, seed=7, steps=3)
    np.testing.assert_allclose(np.asarray(body["action"]), expected, atol=1e-5)
    # the same request again gives the same chunk; a different seed a different one
    assert np.allclose(post_json(http, "/act", payload)[1]["action"], body["action"], atol=1e-6)
    assert not np.allclose(post_json(http, "/act", {**payload, "seed": 8})[1]["action"], body["action"])


def test_encoded_jpeg_and_png_frames(http, rng, serve_checkpoint):
    image = frame(rng, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    png = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    raw = official_payload(rng, n_images=0, seed=1)
    status, from_png = post_json(http, "/act", {**raw, "image0": json_numpy.dumps(png)})
    status_raw, from_raw = post_json(http, "/act", {**raw, "image0": json_numpy.dumps(image)})
    assert status == status_raw == 200
    np.testing.assert_allclose(from_png["action"], from_raw["action"], atol=1e-6)  # PNG is lossless
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    jpeg = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    assert post_json(http, "/act", {**raw, "image0": json_numpy.dumps(jpeg)})[0] == 200


def test_unseeded_requests_draw_fresh_noise(http, rng):
    payload = official_payload(rng)
    first = post_json(http, "/act", payload)[1]["action"]
    second = post_json(http, "/act", payload)[1]["action"]
    assert not np.allclose(first, second)
