"""End-to-end training on tiny models and small mp4 datasets: freezes, recipes, resume, checkpoints, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from xvla import XVLAPolicy
from xvla.cli import main
from xvla.train import build_train_config, train
from xvla.train.config import deep_merge
from xvla.train.optim import build_schedules
from xvla.train.params import parameter_totals
from xvla.train.tracking import read_metrics

from .support import FRONT, WRIST, tiny_policy_fields


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def run(out, dataset, tokenizer=None, stop_at=None, **overrides):
    base = {
        "dataset": {"root": str(dataset)},
        "policy": tiny_policy_fields(),
        "steps": 6,
        "batch_size": 3,
        "num_workers": 0,
        "log_freq": 1,
        "save_freq": 3,
        "tensorboard": False,
        "plot": False,
        "seed": 3,
        "output_dir": str(out),
    }
    cfg = build_train_config(deep_merge(base, overrides))
    return train(cfg, tokenizer=tokenizer, stop_at=stop_at)


def changed(a: dict, b: dict, prefix: str) -> list[bool]:
    return [not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix)]


def test_resume_equals_an_uninterrupted_run(tmp_path, dataset_a, tokenizer):
    sched = {"scheduler": {"freeze_steps": 2, "warmup_steps": 2}, "recipe": "official"}
    full = run(tmp_path / "full", dataset_a, tokenizer, **sched)
    first = run(tmp_path / "split", dataset_a, tokenizer, stop_at=4, **sched)  # interrupted after step 4
    assert [h["step"] for h in first.history] == [1, 2, 3, 4]
    assert first.final_model_dir.parent.name == "000003"  # the last checkpoint written
    rest = run(tmp_path / "split", dataset_a, tokenizer, resume=True, **sched)  # continues from step 3
    losses_full = [h["loss"] for h in full.history]
    losses_split = [h["loss"] for h in first.history[:3] + rest.history]
    assert [h["step"] for h in rest.history] == [4, 5, 6]
    assert losses_split == pytest.approx(losses_full, abs=1e-6, rel=0)
    # The CSV holds each step once: the interrupted run's step-4 row was replaced.
    rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == pytest.approx(losses_full, abs=1e-6)
    a, b = weights(full.final_model_dir), weights(rest.final_model_dir)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a)
    policy = XVLAPolicy.from_pretrained(tmp_path / "split" / "final")
    assert policy.config.image_keys == [FRONT]


def test_official_freeze_then_unfreeze(tmp_path, dataset_a, tiny_checkpoint, tokenizer):
    res = run(
        tmp_path / "o",
        dataset_a,
        tokenizer,
        recipe="official",
        steps=5,
        keep_last=0,
        policy={"path": str(tiny_checkpoint), "freeze_vision_encoder": True},
        scheduler={"freeze_steps": 3, "warmup_steps": 1, "soft_prompt_warmup_steps": 2},
    )
    init = weights(tiny_checkpoint)
    at3 = weights(tmp_path / "o" / "checkpoints" / "000003" / "pretrained_model")
    at5 = weights(res.final_model_dir)
    # During the freeze only soft prompts and action heads move.
    assert all(changed(init, at3, "transformer.soft_prompt_hub")) and all(
        changed(init, at3, "transformer.action_")
    )
    assert not any(changed(init, at3, "vlm.")) and not any(changed(init, at3, "transformer.blocks"))
    # After it everything allowed trains; the frozen vision tower never changes.
    assert all(changed(at3, at5, "transformer.blocks"))
    assert any(changed(at3, at5, "vlm.language_model"))
    assert not any(changed(init, at5, "vlm.vision_tower"))
    # LRs logged per group per step follow the schedule.
    cfg = build_train_config(json.loads((tmp_path / "o" / "train_config.json").read_text()))
    schedules = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
    for row in read_metrics(tmp_path / "o" / "metrics.csv"):
        for group in ("vlm", "soft_prompts", "action_heads", "transformer_core"):
            assert row[f"lr/{group}"] == pytest.approx(schedules[group].lr(int(row["step"]) - 1), rel=1e-12)
    assert res.trainable["vlm"]["warmup"] == 0 and res.trainable["soft_prompts"]["warmup"] > 0


def test_prompt_recipe_trains_only_the_new_domain_rows(tmp_path, dataset_a, tiny_checkpoint, tokenizer):
    # Weight decay on purpose: other domains' rows must stay bit-identical anyway.
    res = run(
        tmp_path / "p",
        dataset_a,
        tokenizer,
        recipe="prompt",
        steps=4,
        policy={"path": str(tiny_checkpoint)},
        new_domain={"init_from": 1},
        optimizer={"weight_decay": 0.1, "lr": 1e-2},
    )
    init, final = weights(tiny_checkpoint), weights(res.final_model_dir)
    policy = XVLAPolicy.from_pretrained(res.final_model_dir)
    new = policy.config.domain_id
    assert new == 0  # the checkpoint uses domain 1, so 0 is the first free id
    assert set(policy.config.domains) == {0, 1}  # the table travels in the checkpoint's config
    # a prompt-recipe run ends with its robot as an adapter that loads back into the starting checkpoint
    start = XVLAPolicy.from_pretrained(tiny_checkpoint)
    assert start.load_adapter(res.output_dir / "adapter.safetensors").domain_id == 0
    tables = [k for k in init if k.startswith(("transformer.soft_prompt_hub", "transformer.action_"))]
    for key in init:
        if key in tables:
            assert not torch.equal(init[key][new], final[key][new]), key
            others = [d for d in range(init[key].shape[0]) if d != new]
            assert torch.equal(init[key][others], final[key][others]), key
        else:
            assert torch.equal(init[key], final[key]), key
    # Initialised from domain 1: before training row 0 == row 1 (checked through the first save's rows).
    rows = res.trainable
    assert rows["soft_prompts"]["trainable"] == 4 * 32 and rows["vlm"]["trainable"] == 0
    assert rows["transformer_core"]["trainable"] == 0


def test_lora_recipe(tmp_path, dataset_a, tiny_checkpoint, tokenizer):
    full = run(
        tmp_path / "l",
        dataset_a,
        tokenizer,
        recipe="lora",
        steps=4,
        save_freq=2,
        policy={"path": str(tiny_checkpoint)},
        optimizer={"lr": 1e-2},
    )
    trainable, total = parameter_totals(full.trainable)
    assert 0 < trainable < 0.5 * total  # tiny model: adapters are relatively large; ~1% at 0.9B
    init, final = weights(tiny_checkpoint), weights(full.final_model_dir)
    assert set(init) == set(final)  # merged: plain keys, no lora_* tensors
    assert any(changed(init, final, "transformer.blocks")) and any(changed(init, final, "vlm."))
    assert torch.equal(init["transformer.pos_emb"], final["transformer.pos_emb"])  # no adapter, frozen
    merged = XVLAPolicy.from_pretrained(full.final_model_dir)
    # The run's adapter file (domain rows + peft-named LoRA weights) turns the base into the merged model.
    base = XVLAPolicy.from_pretrained(tiny_checkpoint)
    info = base.load_adapter(full.output_dir / "adapter.safetensors", domain_id=merged.config.domain_id)
    assert info.metadata["lora"]["r"] == 8 and info.metadata["lora"]["peft_type"] == "LORA"
    for key, value in merged.model.state_dict().items():
        assert torch.allclose(base.model.state_dict()[key], value, atol=1e-6), key
    with pytest.raises(ValueError, match="changed this policy's backbone"):
        base.load_adapter(full.output_dir / "adapter.safetensors", name="again")
    # Resume: base checkpoint + adapters from the training state.
    run(
        tmp_path / "l2",
        dataset_a,
        tokenizer,
        recipe="lora",
        steps=4,
        save_freq=2,
        stop_at=2,
        policy={"path": str(tiny_checkpoint)},
        optimizer={"lr": 1e-2},
    )
    rest = run(
        tmp_path / "l2",
        dataset_a,
        tokenizer,
        recipe="lora",
        steps=4,
        save_freq=2,
        resume=True,
        policy={"path": str(tiny_checkpoint)},
        optimizer={"lr": 1e-2},
    )
    assert [h["loss"] for h in rest.history] == pytest.approx([h["loss"] for h in full.history[2:]], abs=1e-6)


def test_gradient_checkpointing_and_bf16(tmp_path, dataset_a, tokenizer):
    plain = run(tmp_path / "a", dataset_a, tokenizer, steps=2, recipe="lerobot")
    ckpt = run(tmp_path / "b", dataset_a, tokenizer, steps=2, recipe="lerobot", gradient_checkpointing=True)
    assert [h["loss"] for h in ckpt.history] == pytest.approx([h["loss"] for h in plain.history], abs=1e-6)
    bf16 = run(
        tmp_path / "c",
        dataset_a,
        tokenizer,
        steps=2,
        recipe="lerobot",
        grad_accum_steps=2,
        policy={"dtype": "bfloat16"},
    )
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in bf16.history)
    policy = XVLAPolicy.from_pretrained(bf16.final_model_dir)
    assert policy.config.dtype == "bfloat16" and next(policy.parameters()).dtype == torch.bfloat16
    assert weights(bf16.final_model_dir)["transformer.pos_emb"].dtype == torch.float32  # fp32 master weights


def test_cli_mixture_train_resume_and_outputs(tmp_path, dataset_a, dataset_b, tiny_checkpoint, capsys):
    config = tmp_path / "mix.yaml"
    policy = tiny_policy_fields(image_keys=[FRONT, WRIST])
    config.write_text(
        json.dumps(
            {
                "recipe": "lerobot",
                "policy": policy,
                "tokenizer": str(tiny_checkpoint),
                "mixture": {
                    "datasets": [
                        {"root": str(dataset_a), "weight": 2.0, "domain_id": 2},
                        {
                            "root": str(dataset_b),
                            "weight": 1.0,
                            "domain_id": 3,
                            "keys": {FRONT: "observation.images.top"},
                        },
                    ],
                    "color_jitter": {"enable": True},
                    "action_horizon_s": 0.6,
                },
            }
        )
    )
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--output_dir", str(out), "--steps", "4", "--save_freq", "2",
            "--batch_size", "2", "--num_workers", "0", "--keep_last", "1", "--log_freq", "1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    for text in ("trainable parameters per group", "vlm", "soft_prompts", "action_heads", "transformer_core"):
        assert text in printed
    assert main(args) == 2  # the folder holds checkpoints: refuse without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--output_dir", str(out), "--resume", "--steps", "6"]) == 0
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert checkpoints == ["000006", "last"]  # keep_last=1
    assert (out / "loss_curve.png").stat().st_size > 0 and (out / "tensorboard").is_dir()
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4, 5, 6]
    loaded = XVLAPolicy.from_pretrained(out / "final")
    assert loaded.config.image_keys == [FRONT, WRIST]
    training_state = out / "checkpoints" / "last" / "training_state"
    assert {p.name for p in training_state.iterdir()} >= {
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "sampler.json",
        "trainer_state.json",
        "rng_state_rank0.safetensors",
        "rng_state_rank0.json",
    }
    sampler = json.loads((training_state / "sampler.json").read_text())
    assert sampler["next_batch"] == 6 and sum(sampler["draws_per_dataset"]) == 12


def test_cli_on_a_dataset_written_by_lerobot(tmp_path, tiny_checkpoint):
    """The v3.0 fixture written by LeRobot's own code: train from the CLI, resume, load the result."""
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_v30_small"
    out = tmp_path / "lr"
    args = ["train", "--dataset.root", str(fixture), "--policy.path", str(tiny_checkpoint), "--recipe=lerobot",
            "--policy.real_action_dim=3", "--steps=3", "--save_freq=2", "--batch_size=2", "--num_workers=0",
            "--output_dir", str(out), "--tensorboard=false"]  # fmt: skip
    assert main(args) == 0
    assert main(["train", "--output_dir", str(out), "--resume", "--steps=4"]) == 0
    policy = XVLAPolicy.from_pretrained(out / "final")
    assert policy.config.real_action_dim == 3 and policy.model.real_action_dim == 3
    assert [int(r["step"]) for r in read_metrics(out / "metrics.csv")][-1] == 4


@pytest.mark.slow  # compiles three graphs forward and backward: about 2 CPU-minutes
def test_compiled_training_trains_with_the_compiled_dropout(tmp_path, dataset_a, tokenizer):
    # The action head's dropout (p = 0.1) takes its compiled form (hashed uint8 masks) in a real run.
    res = run(tmp_path / "c", dataset_a, tokenizer, steps=3, save_freq=1, recipe="lerobot", compile=True)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 3 and torch.isfinite(torch.tensor(losses)).all()
    first = weights(res.final_model_dir.parent.parent / "000001" / res.final_model_dir.name)
    assert any(changed(first, weights(res.final_model_dir), "transformer."))
