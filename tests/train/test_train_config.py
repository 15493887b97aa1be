"""Training configuration: recipes, precedence (recipe < file < flags), flag parsing, errors."""

from __future__ import annotations

import json

import pytest

from xvla.cli import build_parser
from xvla.train.cli import cli_values, resolve_config
from xvla.train.config import RECIPES, build_train_config

DS = {"dataset": {"root": "/d"}}


def parse(argv):
    return build_parser().parse_args(["train", *argv])


def test_recipes_set_their_defaults():
    official = build_train_config({"recipe": "official", **DS})
    assert official.optimizer.betas == (0.9, 0.95) and official.optimizer.grad_clip_norm == 1.0
    assert official.optimizer.vlm_lr_scale == 0.1 and official.optimizer.soft_prompt_lr_scale == 0.1
    assert official.scheduler.freeze_steps == 1000 and official.scheduler.min_lr_ratio == 0.1
    lerobot = build_train_config({"recipe": "lerobot", **DS})
    assert lerobot.optimizer.betas == (0.9, 0.99) and lerobot.optimizer.grad_clip_norm == 10.0
    assert lerobot.scheduler.decay_steps == 30_000 and lerobot.scheduler.auto_scale
    assert lerobot.scheduler.min_lr_ratio * lerobot.optimizer.lr == pytest.approx(2.5e-6)
    prompt = build_train_config({"recipe": "prompt", **DS})
    assert prompt.trainable == "domain" and prompt.train_domain_rows_only and prompt.new_domain.id == "auto"
    lora = build_train_config({"recipe": "lora", **DS})
    assert lora.lora.enable and lora.lora.r == 8 and lora.trainable == "lora"
    assert set(RECIPES) == {"official", "lerobot", "prompt", "lora"}


def test_precedence_recipe_file_flags(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "recipe: lerobot\nsteps: 50\noptimizer:\n  lr: 3.0e-5\n  grad_clip_norm: 2.0\n"
        "dataset:\n  root: /data/x\n  keys: {observation.images.front: observation.images.top}\n"
    )
    args = parse(
        [
            "--config",
            str(path),
            "--optimizer.lr=1e-3",
            "--steps",
            "70",
            "--policy.path=ckpt",
            "--policy.freeze_vision_encoder",
            "--policy.image_size=[64, 64]",
            "--resume=false",
        ]
    )
    cfg = resolve_config(args.config, cli_values(args))
    assert cfg.recipe == "lerobot"
    assert cfg.optimizer.lr == 1e-3  # flag beats file
    assert cfg.optimizer.grad_clip_norm == 2.0  # file beats recipe
    assert cfg.optimizer.betas == (0.9, 0.99)  # recipe
    assert cfg.steps == 70 and cfg.resume is False
    assert cfg.dataset.keys == {"observation.images.front": "observation.images.top"}
    assert cfg.policy == {"path": "ckpt", "freeze_vision_encoder": True, "image_size": (64, 64)}


def test_flag_types_and_json_values():
    args = parse(
        [
            "--dataset.root=/d",
            "--optimizer.betas=[0.8, 0.9]",
            "--dataset.episodes=0,2",
            '--dataset.keys={"action": "act"}',
            "--new_domain.id=auto",
            "--scheduler.decay_steps=none",
            "--policy.action_mode=auto",
            "--policy.real_action_dim=7",
        ]
    )
    cfg = resolve_config(None, cli_values(args))
    assert cfg.optimizer.betas == (0.8, 0.9)
    assert cfg.dataset.episodes == [0, 2]
    assert cfg.dataset.keys == {"action": "act"}
    assert cfg.new_domain.id == "auto" and cfg.scheduler.decay_steps is None
    assert cfg.policy == {"action_mode": "auto", "real_action_dim": 7}


def test_resume_reads_the_saved_config(tmp_path):
    saved = build_train_config({"recipe": "prompt", "steps": 10, "batch_size": 3, "dataset": {"root": "/d"}})
    saved.output_dir = str(tmp_path)
    saved.save(tmp_path / "train_config.json")
    args = parse(["--output_dir", str(tmp_path), "--resume", "--steps", "20"])
    cfg = resolve_config(args.config, cli_values(args))
    assert cfg.recipe == "prompt" and cfg.batch_size == 3 and cfg.steps == 20 and cfg.resume


@pytest.mark.parametrize(
    "values, message",
    [
        ({"recipe": "nope"}, "recipe"),
        ({"steps": 0}, "steps"),
        ({"optimizer": {"lrr": 1}}, "optimizer.lrr"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
        ({"mixture": {"datasets": [{"root": "/a", "weight": 0}]}}, "weight"),
        ({"dataset": {"root": "/a"}, "mixture": {"datasets": [{"root": "/b"}]}}, "mixture"),
        ({"new_domain": {"id": "first"}}, "new_domain.id"),
    ],
)
def test_errors_name_the_option(values, message):
    with pytest.raises(ValueError, match=message):
        build_train_config(values if "dataset" in values or "mixture" in values else {**DS, **values})


def test_dataset_is_required():
    with pytest.raises(ValueError, match="root"):
        build_train_config({})


def test_unknown_flag_is_rejected(capsys):
    with pytest.raises(SystemExit):
        parse(["--optimizer.learning_rate=1"])


def test_help_lists_recipes_and_policy_flags(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    for word in (
        "official",
        "lerobot",
        "prompt",
        "lora",
        "--policy.path",
        "--policy.action_mode",
        "--policy.freeze_language_encoder",
        "--dataset.repo_id",
        "--resume",
    ):
        assert word in text


def test_saved_config_is_json(tmp_path):
    cfg = build_train_config({"dataset": {"root": "/d"}})
    cfg.save(tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["recipe"] == "official" and data["optimizer"]["betas"] == [0.9, 0.95]


@pytest.mark.parametrize(
    "name", ["official_finetune", "mixture_example", "prompt_new_robot", "lora_new_robot"]
)
def test_example_config_files_parse(name):
    from pathlib import Path

    from xvla.train.config import load_config_file

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml"
    cfg = build_train_config(load_config_file(path))
    assert cfg.datasets() and cfg.policy.get("path")
