"""Helpers shared by the serving tests (imported by name; tests/serve is on sys.path under pytest)."""

from __future__ import annotations

import contextlib
import json

import numpy as np

from xvla import XVLAConfig
from xvla.config import tiny_florence_config

CHUNK, STATE_DIM, NUM_DOMAINS, VIEWS, STEPS, ACTION_DIM = 4, 8, 6, 3, 2, 20


def serve_config(**overrides) -> XVLAConfig:
    """Test-sized: chunk 4, ee6d (20-dim actions), state <= 8, 6 domains, 3 views, 32x32 images."""
    base = dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=NUM_DOMAINS,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=160,
        chunk_size=CHUNK,
        n_action_steps=CHUNK,
        max_state_dim=STATE_DIM,
        florence_config=tiny_florence_config(width=24, vocab_size=300),
        tokenizer_max_length=12,
        image_size=(32, 32),
        num_image_views=VIEWS,
        num_denoising_steps=STEPS,
    )
    base.update(overrides)
    return XVLAConfig(**base)


@contextlib.contextmanager
def running_server(checkpoint, **overrides):
    """A real uvicorn server on a free loopback port for the duration of the block."""
    from xvla.serve.server import BackgroundServer, ServeConfig

    overrides.setdefault("batch_timeout_ms", 10.0)
    cfg = ServeConfig(
        policy_path=str(checkpoint), port=0, device="cpu", threads=1, seed=0, log_level="warning", **overrides
    )
    server = BackgroundServer(cfg).start()
    try:
        yield server
    finally:
        server.stop()


def frame(rng, height=48, width=64) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def official_payload(
    rng, n_images=2, state_dim=STATE_DIM, domain_id=1, steps=None, text="pick up the red block", **extra
) -> dict:
    """An official-client body, every array encoded exactly as the json_numpy package encodes it."""
    import json_numpy

    body = {
        "proprio": json_numpy.dumps(rng.standard_normal(state_dim).astype(np.float32)),
        "language_instruction": text,
        "domain_id": domain_id,
    }
    for i in range(n_images):
        body[f"image{i}"] = json_numpy.dumps(frame(rng))
    if steps is not None:
        body["steps"] = steps
    body.update(extra)
    return body


def post_json(client, path: str, body) -> tuple[int, dict]:
    response = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, {"raw": response.text}
