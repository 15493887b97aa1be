"""Helpers for the data tests: a toy LeRobot dataset (3 episodes, a video and an image camera).

Every frame's pixels, state and action are a known function of (episode, frame), so a test can say
exactly which frame it got back.
"""

from __future__ import annotations

import numpy as np

FPS = 10
LENGTHS = (7, 5, 4)
TASKS = ("pick the cube", "open the drawer", "pick the cube")
FRONT = "observation.images.front"  # video, 48x64
WRIST = "observation.images.wrist"  # image (PNG in the parquet), 32x32
FEATURES = {
    FRONT: {"dtype": "video", "shape": (48, 64, 3)},
    WRIST: {"dtype": "image", "shape": (32, 32, 3)},
    "observation.state": {"dtype": "float32", "shape": (4,), "names": ["a", "b", "c", "d"]},
    "action": {"dtype": "float32", "shape": (3,)},
}


def front_colour(ep: int, i: int) -> np.ndarray:
    """Solid colours 30 levels apart from frame to frame: a decoded frame identifies itself."""
    r = 10 + 30 * i
    return np.array([r, 250 - r, 30 + 70 * ep], dtype=np.uint8)


def wrist_value(ep: int, i: int) -> int:
    return 7 + 30 * i + 3 * ep


def state(ep: int, i: int) -> np.ndarray:
    return np.array([10 * ep + i, ep, i, 0.5 * i], dtype=np.float32)


def action(ep: int, i: int) -> np.ndarray:
    return np.array([100 * ep + i, -i, 1.0], dtype=np.float32)


def make_frame(ep: int, i: int) -> dict:
    front = np.empty((48, 64, 3), np.uint8)
    front[:] = front_colour(ep, i)
    return {
        FRONT: front,
        WRIST: np.full((32, 32, 3), wrist_value(ep, i), np.uint8),
        "observation.state": state(ep, i),
        "action": action(ep, i),
    }


def write_dataset(root, lengths=LENGTHS, tasks=TASKS):
    from xvla.data import LeRobotDatasetWriter

    writer = LeRobotDatasetWriter.create(root, fps=FPS, features=FEATURES, robot_type="toy")
    for ep, (n, task) in enumerate(zip(lengths, tasks, strict=True)):
        for i in range(n):
            writer.add_frame(make_frame(ep, i))
        writer.save_episode(task=task)
    return writer.finalize()
