"""lerobot-record and lerobot-eval through the xvla_plus classes (simulated robot / LeRobot's Meta-World env)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from lerobot_policy_xvla_plus.export import export

import xvla

pytest.importorskip("metaworld")
BIN = Path(sys.executable).parent


def run(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }
    return subprocess.run(
        [str(BIN / command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


def tiny_for(tmp_path: Path, tokenizer_dir: Path, cameras: list[str]) -> Path:
    torch.manual_seed(0)
    config = tiny_config(
        action_mode="auto",
        max_action_dim=8,
        real_action_dim=4,
        chunk_size=8,
        n_action_steps=8,
        image_keys=cameras,
        tokenizer_name=str(tokenizer_dir),
    )
    source = tmp_path / "xvla_checkpoint"
    xvla.XVLAPolicy(config).save_pretrained(source)
    return source


def test_lerobot_record_with_the_policy_records_its_actions(tmp_path, tokenizer_dir):
    source = tiny_for(tmp_path, tokenizer_dir, ["observation.images.main", "observation.images.wrist"])
    checkpoint = export(source, tmp_path / "for_lerobot")  # an xvla checkpoint -> --policy.path
    root = tmp_path / "recorded"
    result = run(
        "lerobot-record",
        "--robot.type=xvla_metaworld",
        "--robot.id=rec",
        "--robot.image_size=32",
        f"--policy.path={checkpoint}",
        "--dataset.repo_id=local/eval_xvla_plus",
        f"--dataset.root={root}",
        "--dataset.single_task=reach the goal",
        "--dataset.num_episodes=1",
        "--dataset.episode_time_s=1",
        "--dataset.reset_time_s=0",
        "--dataset.fps=10",
        "--dataset.push_to_hub=false",
        "--display_data=false",
        "--play_sounds=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["total_frames"] > 0
    assert {"observation.images.main", "observation.images.wrist", "observation.state", "action"} <= set(
        info["features"]
    )


@pytest.mark.slow  # one 500-step Meta-World episode rendered at 480x480: several minutes on a CPU
def test_lerobot_eval_runs_one_metaworld_episode(tmp_path, tokenizer_dir):
    source = tiny_for(tmp_path, tokenizer_dir, ["observation.image"])  # LeRobot's Meta-World camera
    out = tmp_path / "eval"
    result = run(
        "lerobot-eval",
        "--policy.type=xvla_plus",
        f"--policy.init_from={source}",
        "--policy.device=cpu",
        "--env.type=metaworld",
        "--env.task=reach-v3",
        "--eval.n_episodes=1",
        "--eval.batch_size=1",
        f"--output_dir={out}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "'n_episodes': 1" in result.stdout + result.stderr
