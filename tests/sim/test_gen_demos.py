"""Scripted demonstrations into LeRobot v3.0 datasets, read back with xvla.data.LeRobotDataset."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _actions(root):
    import pyarrow.parquet as pq

    files = sorted(root.glob("data/*/*.parquet"))
    return np.concatenate([np.asarray(pq.read_table(f).column("action").to_pylist()) for f in files])


@pytest.fixture(scope="module")
def demos(metaworld, tmp_path_factory):
    from xvla.sim.gen_demos import DemoConfig, generate_demonstrations

    out = tmp_path_factory.mktemp("demos")
    config = DemoConfig(
        output=str(out),
        tasks="reach-v3",
        variants="sawyer,sawyer-joint7",
        episodes_per_task=2,
        seed=0,
        workers=1,
        image_size=32,
        max_steps=120,
        progress=False,
    )
    return out, generate_demonstrations(config)


def test_datasets_read_back(demos):
    from xvla.data import LeRobotDataset
    from xvla.sim.gen_demos import read_sim_meta
    from xvla.sim.variants import VARIANTS

    out, summary = demos
    for name in ("sawyer", "sawyer-joint7"):
        variant = VARIANTS[name]
        stats = summary["variants"][name]
        assert stats["episodes"] == 2 and stats["domain_id"] == variant.domain_id
        ds = LeRobotDataset(out / name)
        assert ds.num_episodes == 2 and ds.fps == variant.fps and len(ds) == stats["frames"]
        sample = ds[0]
        assert sample["task"] == "move the gripper to the red target point"
        assert tuple(sample["observation.images.main"].shape) == (3, 32, 32)
        assert tuple(sample["observation.state"].shape) == (4,)
        assert sample["action"].shape[-1] == variant.action_dim
        meta = read_sim_meta(out / name)
        assert meta["variant"]["name"] == name and meta["domain_id"] == variant.domain_id
        assert meta["instructions"] == {"reach-v3": "move the gripper to the red target point"}
        assert [e["layout_index"] for e in meta["episodes"]] == [0, 1]
        # stored actions are the variant's transform of the expert's: they map back into [-1, 1]^4
        actions = _actions(out / name)
        env_actions = variant.action.to_env(actions, clip=False)
        assert np.all(np.abs(env_actions) <= 1 + 1e-5)
        np.testing.assert_allclose(variant.action.from_env(env_actions), actions, atol=1e-5)
    assert json.loads((out / "summary.json").read_text())["variants"]["sawyer"]["episodes"] == 2


def test_parallel_generation_is_deterministic(demos, tmp_path):
    from xvla.sim.gen_demos import DemoConfig, generate_demonstrations

    out, _ = demos
    config = DemoConfig(
        output=str(tmp_path),
        tasks="reach-v3",
        variants="sawyer",
        episodes_per_task=2,
        seed=0,
        workers=2,
        image_size=32,
        max_steps=120,
        progress=False,
    )
    generate_demonstrations(config)
    np.testing.assert_array_equal(_actions(tmp_path / "sawyer"), _actions(out / "sawyer"))
    videos = sorted(p.relative_to(out).as_posix() for p in (out / "sawyer").rglob("*.mp4"))
    assert videos and videos == sorted(
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "sawyer").rglob("*.mp4")
    )
    for name in videos:  # byte for byte: the encoder is deterministic too
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_failed_episodes_are_dropped(metaworld, tmp_path, caplog):
    from xvla.sim.gen_demos import DemoConfig, generate_demonstrations

    config = DemoConfig(
        output=str(tmp_path),
        tasks="reach-v3",
        variants="sawyer",
        episodes_per_task=1,
        workers=1,
        image_size=32,
        max_steps=3,
        max_attempts_factor=2,
        progress=False,
    )
    summary = generate_demonstrations(config)
    task = summary["variants"]["sawyer"]["tasks"]["reach-v3"]
    assert task == {"episodes": 0, "attempts": 2, "expert_success_rate": 0.0, "mean_length": None}
    assert "fewer successful episodes" in caplog.text
