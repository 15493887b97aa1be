"""The xvla_plus plugin inside LeRobot 0.4.4: training, checkpoints both ways, LeRobot xvla checkpoints, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_DATASET, REPO, fixture_batch, tiny_config
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
from lerobot.policies.factory import get_policy_class, make_policy, make_pre_post_processors
from lerobot_policy_xvla_plus import XVLAPlusConfig, XVLAPlusPolicy

import xvla

BIN = Path(sys.executable).parent


def run_lerobot(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(BIN / command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def train_args(init_from: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--policy.type=xvla_plus",
        f"--policy.init_from={init_from}",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--dataset.repo_id=local/lerobot_v30_small",
        f"--dataset.root={FIXTURE_DATASET}",
        "--dataset.video_backend=pyav",
        "--steps=2",
        "--batch_size=2",
        "--save_freq=2",
        "--log_freq=1",
        "--num_workers=0",
        "--wandb.enable=false",
        "--eval_freq=0",
        f"--output_dir={output}",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory) -> Path:
    """``lerobot-train --policy.type=xvla_plus`` for 2 steps on the LeRobot v3.0 fixture dataset."""
    out = tmp_path_factory.mktemp("train") / "run"
    result = run_lerobot("lerobot-train", *train_args(tiny_checkpoint, out), cwd=out.parent)
    assert result.returncode == 0, result.stderr[-4000:]
    return out / "checkpoints" / "000002" / "pretrained_model"


def same_noise_actions(policies, batch, width=8):
    noise = torch.randn(1, 4, width, generator=torch.Generator().manual_seed(3))
    return [p.predict_action_chunk(batch, noise=noise.clone()) for p in policies]


def test_lerobot_train_saves_a_checkpoint_xvla_loads_with_identical_actions(trained, tiny_checkpoint):
    config = json.loads((trained / "config.json").read_text())
    assert config["type"] == "xvla_plus" and config["format"] == "xvla"
    assert config["image_keys"] == ["observation.images.front", "observation.images.wrist"]
    assert config["real_action_dim"] == 3  # action_mode auto: the dataset's action width
    ours = xvla.XVLAPolicy.from_pretrained(trained)
    theirs = get_policy_class("xvla_plus").from_pretrained(trained)
    a, b = same_noise_actions([ours, theirs], fixture_batch())
    assert a.shape == (1, 4, 3)
    assert torch.equal(a, b)
    # the weights did change in training (a checkpoint equal to the start would pass the test above too)
    start = xvla.XVLAPolicy.from_pretrained(
        tiny_checkpoint,
        real_action_dim=3,
        image_keys=["observation.images.front", "observation.images.wrist"],
    )
    assert not torch.equal(same_noise_actions([start], fixture_batch())[0], a)


def test_an_xvla_checkpoint_loads_in_lerobot_with_identical_actions(tiny_checkpoint):
    ours = xvla.XVLAPolicy.from_pretrained(tiny_checkpoint)
    theirs = XVLAPlusPolicy.from_pretrained(tiny_checkpoint)
    batch = {k: v for k, v in fixture_batch().items() if k != "observation.images.wrist"}
    a, b = same_noise_actions([ours, theirs], batch)
    assert torch.equal(a, b)


def test_the_lerobot_pipeline_gives_the_same_actions_as_xvla(trained):
    """LeRobot's saved pre/post-processors + the plugin policy == xvla on the raw batch."""
    config = PreTrainedConfig.from_pretrained(trained)
    config.pretrained_path = trained
    policy = XVLAPlusPolicy.from_pretrained(trained, config=config)
    pre, post = make_pre_post_processors(config, pretrained_path=str(trained))
    raw = {k: (v[0] if k != "task" else v[0]) for k, v in fixture_batch().items()}  # one unbatched frame
    noise = torch.randn(1, 4, 8)
    via_lerobot = post(policy.predict_action_chunk(pre(dict(raw)), noise=noise.clone()))
    direct = xvla.XVLAPolicy.from_pretrained(trained).predict_action_chunk(
        {k: (v[None] if k != "task" else [v]) for k, v in raw.items()}, noise=noise.clone()
    )
    assert torch.equal(via_lerobot, direct)


def test_resuming_the_recipe_schedule_lr_per_group(trained):
    """The recipe's per-group LR (VLM at 0.1x) reaches LeRobot's optimizer through get_optim_params."""
    policy = XVLAPlusPolicy.from_pretrained(trained)
    groups = {g["name"]: g["lr"] for g in policy.get_optim_params()}
    assert groups["vlm"] == pytest.approx(0.1 * groups["transformer_core"])
    state = json.loads((trained.parent / "training_state" / "scheduler_state.json").read_text())
    assert state["last_epoch"] == 2


# ---------------------------------------------------------------------------------------------- LeRobot's xvla


def build_lerobot_xvla(folder: Path, tokenizer_dir: Path):
    """A tiny random policy of LeRobot's own `xvla` type, saved with its processors (a `lerobot/xvla-*` layout)."""
    from lerobot.policies.xvla.configuration_xvla import XVLAConfig as LeRobotXVLAConfig
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy as LeRobotXVLAPolicy
    from lerobot.policies.xvla.processor_xvla import make_xvla_pre_post_processors

    from xvla.checkpoints.florence import florence_config_to_remote

    small = tiny_config_kwargs()
    config = LeRobotXVLAConfig(
        florence_config=florence_config_to_remote(small.pop("florence_config")),
        tokenizer_name=str(tokenizer_dir),
        device="cpu",
        action_mode="auto",
        max_action_dim=8,
        input_features={
            "observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)),
            "observation.state": PolicyFeature(FeatureType.STATE, (8,)),
        },
        output_features={"action": PolicyFeature(FeatureType.ACTION, (3,))},
        **small,
    )
    torch.manual_seed(0)
    policy = LeRobotXVLAPolicy(config)
    with torch.no_grad():  # LeRobot leaves image_projection uninitialised: give every weight a defined value
        for p in policy.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    pre, post = make_xvla_pre_post_processors(config)
    policy.save_pretrained(folder)
    pre.save_pretrained(folder)
    post.save_pretrained(folder)
    return policy.eval(), pre, post


def tiny_config_kwargs() -> dict:
    """The main suite's tiny architecture, in LeRobot xvla's field names (the same names)."""
    base = tiny_config().to_dict()
    keys = (
        "hidden_size",
        "depth",
        "num_heads",
        "num_domains",
        "len_soft_prompts",
        "dim_time",
        "max_len_seq",
        "chunk_size",
        "n_action_steps",
        "max_state_dim",
        "tokenizer_max_length",
        "florence_config",
    )
    return {k: base[k] for k in keys}


def test_a_lerobot_xvla_checkpoint_runs_under_xvla_plus_with_lerobots_actions(tmp_path, tokenizer_dir):
    folder = tmp_path / "lerobot_xvla"
    reference, ref_pre, ref_post = build_lerobot_xvla(folder, tokenizer_dir)
    assert json.loads((folder / "config.json").read_text())["type"] == "xvla"

    # --policy.type=xvla_plus --policy.init_from=<the LeRobot xvla folder>
    config = XVLAPlusConfig(init_from=str(folder), device="cpu")
    ours = XVLAPlusPolicy(config)
    pre, post = make_pre_post_processors(config)

    raw = {
        "observation.images.front": torch.rand(3, 32, 32),
        "observation.state": torch.randn(8),
        "task": "pick up the red block",
    }
    noise = torch.randn(1, 4, 8)
    real_randn = torch.randn
    torch.randn = lambda *a, **k: noise.clone()  # LeRobot's xvla draws its noise with one torch.randn call
    try:
        expected = ref_post(reference.predict_action_chunk(ref_pre(dict(raw))))
    finally:
        torch.randn = real_randn
    actual = post(ours.predict_action_chunk(pre(dict(raw)), noise=noise.clone()))
    assert actual.shape == expected.shape == (1, 4, 3)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)  # float32 rounding: 7.5e-9 here


# ---------------------------------------------------------------------------------------------- bad input


def policy_on_fixture_dataset(tiny_checkpoint, **fields):
    meta = LeRobotDatasetMetadata("local/lerobot_v30_small", root=FIXTURE_DATASET)
    config = XVLAPlusConfig(init_from=str(tiny_checkpoint), device="cpu", **fields)
    return make_policy(config, ds_meta=meta)


def test_a_state_wider_than_the_policy_names_the_feature_and_the_flag(tmp_path, tokenizer_dir):
    narrow = tmp_path / "narrow"
    xvla.XVLAPolicy(tiny_config(max_state_dim=2, action_mode="auto", max_action_dim=8)).save_pretrained(
        narrow
    )
    with pytest.raises(ValueError) as info:
        policy_on_fixture_dataset(narrow)
    message = str(info.value)
    assert "'observation.state' has 4 values" in message and "--policy.max_state_dim=4" in message
    assert "\n" not in message


def test_an_action_wider_than_the_action_space_names_the_feature_and_the_flag(tmp_path):
    joint = tmp_path / "joint"
    xvla.XVLAPolicy(tiny_config(action_mode="franka_joint7")).save_pretrained(joint)
    with pytest.raises(
        ValueError, match=r"dataset feature 'action' has 3-dim actions.*--policy.action_mode=auto"
    ):
        policy_on_fixture_dataset(joint)


def test_a_camera_the_policy_needs_names_the_feature_and_the_rename_flag(tiny_checkpoint):
    policy = policy_on_fixture_dataset(tiny_checkpoint, image_keys=["observation.images.top"])
    with pytest.raises(
        ValueError, match=r"camera feature 'observation.images.top' is missing.*--rename_map="
    ):
        policy.predict_action_chunk(fixture_batch())


def test_lerobot_train_reports_a_mismatch_in_one_line(tmp_path, tokenizer_dir):
    narrow = tmp_path / "narrow"
    xvla.XVLAPolicy(tiny_config(max_state_dim=2, action_mode="auto", max_action_dim=8)).save_pretrained(
        narrow
    )
    result = run_lerobot("lerobot-train", *train_args(narrow, tmp_path / "run"), cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "'observation.state' has 4 values" in last and "--policy.max_state_dim=4" in last


def test_an_unsupported_lerobot_version_is_refused_at_import(monkeypatch):
    import lerobot_policy_xvla_plus as plugin

    monkeypatch.setattr(plugin, "version", lambda name: "0.5.1")
    with pytest.raises(ImportError, match=r"supports LeRobot >=0.4.4,<0.5, but LeRobot 0.5.1 is installed"):
        plugin._check_lerobot()
    monkeypatch.setattr(plugin, "version", lambda name: "0.4.4")
    assert plugin._check_lerobot() == "0.4.4"


def test_lerobot_discovers_the_plugin_by_its_distribution_name():
    code = (
        "from lerobot.utils.import_utils import register_third_party_plugins as r; r(); "
        "from lerobot.policies.factory import get_policy_class as g; print(g('xvla_plus').__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.stdout.strip() == "XVLAPlusPolicy", result.stderr[-2000:]
