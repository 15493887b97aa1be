"""Parameter groups and per-group learning rates, step by step, for every recipe."""

from __future__ import annotations

import math

import pytest
import torch

from xvla.model.xvla import XVLAModel
from xvla.train.config import PARAM_GROUPS, build_train_config
from xvla.train.optim import GroupLRScheduler, build_optimizer, build_schedules
from xvla.train.params import group_of, select_trainable

from .support import tiny_train_config

DS = {"dataset": {"root": "/d"}}


def cosine(step, begin, end, lo):
    p = min(1.0, max(0.0, (step - begin) / max(1, end - begin)))
    return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))


def test_group_names():
    assert group_of("vlm.vision_tower.convs.0.conv.weight") == "vlm"
    assert group_of("module.policy.model.vlm.language_model.shared.weight") == "vlm"
    assert group_of("transformer.soft_prompt_hub.weight") == "soft_prompts"
    assert group_of("transformer.action_encoder.fc.weight") == "action_heads"
    assert group_of("transformer.action_decoder.bias.weight") == "action_heads"
    assert group_of("transformer.blocks.0.attn.qkv.weight") == "transformer_core"
    assert group_of("transformer.vlm_proj.weight") == "transformer_core"
    assert group_of("transformer.blocks.1.mlp.fc1.lora_A.default.weight") == "transformer_core"


def test_official_lr_per_group_per_step():
    cfg = build_train_config(
        {
            **DS,
            "recipe": "official",
            "steps": 20,
            "scheduler": {"freeze_steps": 4, "warmup_steps": 2, "soft_prompt_warmup_steps": 3},
        }
    )
    sched = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
    base = 1e-4
    for step in range(21):
        # soft prompts: 0.1x, own 3-step warm-up from step 0, cosine to 0.1x at step 20
        expect = 0.1 * base * ((step + 1) / 3 if step < 3 else cosine(step, 3, 20, 0.1))
        assert sched["soft_prompts"].lr(step) == pytest.approx(expect, rel=1e-12, abs=1e-20)
        # action heads: 1x, 2-step warm-up from step 0
        expect = base * ((step + 1) / 2 if step < 2 else cosine(step, 2, 20, 0.1))
        assert sched["action_heads"].lr(step) == pytest.approx(expect, rel=1e-12)
        # vlm (0.1x) and transformer core (1x): 0 while frozen, warm-up from step 4
        for name, scale in (("vlm", 0.1), ("transformer_core", 1.0)):
            if step < 4:
                expect = 0.0
            elif step < 6:
                expect = scale * base * (step - 4 + 1) / 2
            else:
                expect = scale * base * cosine(step, 6, 20, 0.1)
            assert sched[name].lr(step) == pytest.approx(expect, rel=1e-12, abs=0)
    assert sched["vlm"].lr(20) == pytest.approx(1e-6)  # cosine ends at 0.1 x 0.1 x 1e-4


def test_lerobot_schedule_and_auto_scale():
    cfg = build_train_config({**DS, "recipe": "lerobot", "steps": 300})
    sched = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
    # 300 < 30000 decay steps: warm-up 1000 and decay shrink by 300/30000 -> warm-up 10, decay to step 300
    core = sched["transformer_core"]
    assert core.warmup == 10 and core.decay_end == 300
    assert core.lr(0) == pytest.approx(1e-5) and core.lr(9) == pytest.approx(1e-4)
    assert core.lr(300) == pytest.approx(2.5e-6)
    assert sched["vlm"].lr(9) == pytest.approx(1e-5)  # VLM at 0.1x
    assert sched["soft_prompts"].lr(9) == pytest.approx(1e-4)
    long = build_train_config({**DS, "recipe": "lerobot", "steps": 60_000})
    core = build_schedules(long.optimizer, long.scheduler, long.steps)["transformer_core"]
    assert core.warmup == 1000 and core.decay_end == 30_000 and core.lr(45_000) == pytest.approx(2.5e-6)


@pytest.mark.parametrize("recipe", ["prompt", "lora"])
def test_prompt_and_lora_schedules(recipe):
    cfg = build_train_config({**DS, "recipe": recipe, "steps": 100, "scheduler": {"warmup_steps": 10}})
    sched = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
    for name in PARAM_GROUPS:
        assert sched[name].start == 0
        assert sched[name].lr(0) == pytest.approx(sched[name].peak_lr / 10)
        assert sched[name].lr(100) == pytest.approx(sched[name].peak_lr * 0.1)
    assert sched["soft_prompts"].peak_lr == pytest.approx(1e-4)


def test_constant_schedule():
    cfg = build_train_config(
        {**DS, "steps": 50, "scheduler": {"type": "constant", "warmup_steps": 5, "freeze_steps": 0}}
    )
    sched = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
    assert [sched["transformer_core"].lr(s) for s in (0, 4, 5, 49)] == pytest.approx([2e-5, 1e-4, 1e-4, 1e-4])


def test_optimizer_groups_and_scheduler_state():
    model = XVLAModel(tiny_train_config())
    cfg = build_train_config({**DS, "steps": 10, "scheduler": {"freeze_steps": 3, "warmup_steps": 2}})
    trainable = select_trainable(model, "config")
    opt = build_optimizer(model, trainable, cfg.optimizer)
    assert [g["name"] for g in opt.param_groups] == list(PARAM_GROUPS)
    assert opt.defaults["betas"] == (0.9, 0.95) and all(g["weight_decay"] == 0 for g in opt.param_groups)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len({id(p) for p in model.parameters()})
    sched = GroupLRScheduler(opt, build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps))
    seen = []
    for _ in range(6):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        sched.step()
    assert [s["vlm"] for s in seen[:3]] == [0.0, 0.0, 0.0] and seen[3]["vlm"] > 0
    # A fresh scheduler restored from the state continues with the same values.
    opt2 = build_optimizer(model, trainable, cfg.optimizer)
    sched2 = GroupLRScheduler(opt2, build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps))
    sched2.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_frozen_groups_are_left_out_of_the_optimizer():
    model = XVLAModel(tiny_train_config(freeze_vision_encoder=True, freeze_language_encoder=True))
    cfg = build_train_config(DS)
    opt = build_optimizer(model, select_trainable(model, "config"), cfg.optimizer)
    # The switches freeze the vision tower and the language encoder (as LeRobot's do); the multi-modal
    # projector between them still trains.
    names = {id(p): n for n, p in model.named_parameters()}
    vlm = next(g for g in opt.param_groups if g["name"] == "vlm")
    assert all(names[id(p)].startswith("vlm.multi_modal_projector.") for p in vlm["params"])
    with pytest.raises(ValueError, match="nothing to train"):
        build_optimizer(model, {}, cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
