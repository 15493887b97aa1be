"""A dataset written by LeRobot 0.4.4 itself reads back as LeRobot's reader returned it (expected.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from xvla.data import LeRobotDataset, LeRobotDatasetWriter

FIXTURE = Path(__file__).parents[1] / "fixtures" / "lerobot_v30_small"


def test_matches_lerobots_own_reader():
    expected = json.loads((FIXTURE / "expected.json").read_text())
    ds = LeRobotDataset(FIXTURE, chunk_size=expected["chunk_size"])
    assert len(ds) == len(expected["frames"])
    for idx, want in enumerate(expected["frames"]):
        item = ds[idx]
        assert item["task"] == want["task"]
        for key in ("episode_index", "frame_index", "index", "task_index"):
            assert item[key].item() == want[key], (idx, key)
        assert item["timestamp"].item() == pytest.approx(want["timestamp"])
        for key in ("observation.state", "action", "action_is_pad"):
            assert item[key].tolist() == want[key], (idx, key)
        for cam in ds.meta.camera_keys:
            np.testing.assert_allclose(
                item[cam].mean(dim=(1, 2)).numpy(), want[f"{cam}.mean_rgb"], atol=1 / 255
            )


def test_resume_a_lerobot_dataset(tmp_path):
    root = shutil.copytree(FIXTURE, tmp_path / "ds")
    w = LeRobotDatasetWriter.resume(root)
    front = np.zeros((48, 64, 3), np.uint8)
    for i in range(2):
        w.add_frame(
            {
                "observation.images.front": front,
                "observation.images.wrist": front[:32, :32],
                "observation.state": np.full(4, i, np.float32),
                "action": np.zeros(3, np.float32),
            }
        )
    assert w.save_episode(task="open the drawer") == 2
    ds = LeRobotDataset(root, chunk_size=2)
    assert len(ds) == 13 and ds.meta.tasks == ["pick the cube", "open the drawer"]
    assert ds[12]["observation.state"].tolist() == [1.0] * 4 and ds[12]["task_index"].item() == 1
    expected = json.loads((FIXTURE / "expected.json").read_text())["frames"]
    assert ds[7]["action"][0].tolist() == expected[7]["action"][0]  # LeRobot's episodes untouched
