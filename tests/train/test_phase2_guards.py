"""Phase II refuses or adapts instead of training the wrong thing: the action width comes from the dataset,
and `new_domain.init_from` must name a domain the checkpoint trained."""

from __future__ import annotations

import pytest
import torch

from xvla import XVLAPolicy
from xvla.adapters import describe_adapter
from xvla.train import build_train_config, train
from xvla.train.config import deep_merge

from .support import FRONT, tiny_train_config


def run(out, dataset, tokenizer, **overrides):
    base = {
        "dataset": {"root": str(dataset)},
        "steps": 2,
        "batch_size": 2,
        "num_workers": 0,
        "save_freq": 2,
        "tensorboard": False,
        "plot": False,
        "output_dir": str(out),
    }
    return train(build_train_config(deep_merge(base, overrides)), tokenizer=tokenizer)


def checkpoint(path, tokenizer, **fields):
    torch.manual_seed(0)
    XVLAPolicy(tiny_train_config(image_keys=[FRONT], **fields), tokenizer=tokenizer).save_pretrained(path)
    return path


def test_phase2_trains_the_dataset_action_width(tmp_path, dataset_a, tokenizer, capsys):
    """A 4-wide checkpoint adapted to a 7-wide robot (dataset_a) once trained and exported 4 of the 7 channels."""
    narrow = checkpoint(tmp_path / "narrow", tokenizer, real_action_dim=4)
    res = run(tmp_path / "p", dataset_a, tokenizer, recipe="prompt", policy={"path": str(narrow)})
    assert "the dataset has 7-dim actions, the checkpoint 4" in capsys.readouterr().out
    assert XVLAPolicy.from_pretrained(res.final_model_dir).config.real_action_dim == 7
    assert describe_adapter(res.output_dir / "adapter.safetensors")["action_dim"] == 7


def test_a_wider_dataset_without_a_new_domain_names_the_flag(tmp_path, dataset_a, tokenizer):
    narrow = checkpoint(tmp_path / "narrow", tokenizer, real_action_dim=4)
    with pytest.raises(ValueError, match=r"7-dim actions but real_action_dim=4.*--policy.real_action_dim=7"):
        run(tmp_path / "f", dataset_a, tokenizer, recipe="lerobot", policy={"path": str(narrow)})


def test_phase2_in_a_fixed_action_mode_refuses_before_the_first_step(tmp_path, dataset_a, tokenizer):
    fixed = checkpoint(tmp_path / "ee6d", tokenizer, action_mode="ee6d", max_action_dim=20)
    with pytest.raises(ValueError, match=r"7-dim actions.*--policy.action_mode=auto"):
        run(tmp_path / "x", dataset_a, tokenizer, recipe="prompt", policy={"path": str(fixed)})
    assert not list((tmp_path / "x").glob("checkpoints/0*"))


def test_init_from_an_untrained_domain_is_refused(tmp_path, dataset_a, tokenizer, tiny_checkpoint):
    # tiny_checkpoint trained domain 1 only: domain 3's rows are its random initialisation
    with pytest.raises(ValueError, match=r"init_from=3: domain 3 was never trained.*trained: 1 "):
        run(
            tmp_path / "u",
            dataset_a,
            tokenizer,
            recipe="prompt",
            policy={"path": str(tiny_checkpoint)},
            new_domain={"init_from": 3},
        )


def test_init_from_a_released_domain_is_allowed_on_the_released_base(tmp_path, dataset_a, tokenizer):
    # A 30-domain checkpoint without a domain table is (or descends from) the released base: 3 is libero.
    base = checkpoint(tmp_path / "base", tokenizer, num_domains=30)
    res = run(
        tmp_path / "r",
        dataset_a,
        tokenizer,
        recipe="prompt",
        policy={"path": str(base)},
        new_domain={"init_from": 3},
        dry_run=True,
    )
    assert res.final_model_dir is None  # a dry run: set-up only, it got past the domain check
