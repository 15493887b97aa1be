"""Helpers for the training tests: tiny models and small LeRobot v3.0 datasets with mp4 video.

Every frame's state and action are a known function of (dataset, episode, frame), so a test can tell
which frame a sample came from.
"""

from __future__ import annotations

import numpy as np

from xvla import XVLAConfig
from xvla.config import tiny_florence_config

FPS = 10
FRONT = "observation.images.front"
WRIST = "observation.images.wrist"
TASKS = ("pick up the red block", "open the drawer", "stack the cubes")


def tiny_policy_fields(**overrides) -> dict:
    """XVLAConfig fields of a tiny model (trained from scratch in tests)."""
    base = dict(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=6,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=160,
        chunk_size=4,
        n_action_steps=4,
        max_state_dim=8,
        action_mode="auto",
        max_action_dim=8,
        florence_config=tiny_florence_config(width=24, vocab_size=300),
        tokenizer_max_length=12,
        image_size=(32, 32),
        image_keys=[FRONT],
        domain_id=1,
    )
    base.update(overrides)
    return base


def tiny_train_config(**overrides) -> XVLAConfig:
    return XVLAConfig(**tiny_policy_fields(**overrides))


def state_value(ds: int, ep: int, i: int, dim: int) -> np.ndarray:
    return np.array([1000 * ds + 100 * ep + i] + [0.1 * k for k in range(1, dim)], dtype=np.float32)


def action_value(ds: int, ep: int, i: int, dim: int) -> np.ndarray:
    """Dimension 0 identifies the frame: ds + ep / 10 + i / 1000 (small values keep the losses small)."""
    return np.array([ds + 0.1 * ep + 0.001 * i, -0.05 * i] + [0.25] * (dim - 2), dtype=np.float32)


def frame_of_action(value: float) -> tuple[int, int, int]:
    code = int(round(value * 1000))
    return code // 1000, (code % 1000) // 100, code % 100


def write_dataset(
    root,
    ds: int = 0,
    lengths=(12, 9, 10),
    camera: str = FRONT,
    wrist: bool = False,
    state_dim: int = 6,
    action_dim: int = 7,
    size=(32, 32),
):
    """A v3.0 dataset: one mp4 camera (+ an optional wrist video), state and action per frame."""
    from xvla.data import LeRobotDatasetWriter

    h, w = size
    features = {
        camera: {"dtype": "video", "shape": (h, w, 3)},
        "observation.state": {"dtype": "float32", "shape": (state_dim,)},
        "action": {"dtype": "float32", "shape": (action_dim,)},
    }
    if wrist:
        features[WRIST] = {"dtype": "video", "shape": (h, w, 3)}
    writer = LeRobotDatasetWriter.create(root, fps=FPS, features=features, robot_type=f"toy{ds}")
    for ep, n in enumerate(lengths):
        for i in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = np.array([(10 + 20 * i) % 256, (200 - 15 * ep) % 256, 40 + 60 * ds], np.uint8)
            frame = {
                camera: img,
                "observation.state": state_value(ds, ep, i, state_dim),
                "action": action_value(ds, ep, i, action_dim),
            }
            if wrist:
                frame[WRIST] = 255 - img
            writer.add_frame(frame)
        writer.save_episode(task=TASKS[ep % len(TASKS)])
    return writer.finalize()
