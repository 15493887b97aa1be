"""What each recipe trains: parameter counts per group (tiny and the released 0.9B size), LoRA, the
domain-row keeper, and the dry run that prints them."""

from __future__ import annotations

import torch

from xvla.cli import main
from xvla.config import XVLAConfig
from xvla.model.xvla import XVLAModel
from xvla.train.config import PARAM_GROUPS, build_train_config
from xvla.train.lora import apply_lora
from xvla.train.params import DomainRowKeeper, apply_requires_grad, count_table, select_trainable

from .support import tiny_train_config


def recipe_counts(config: XVLAConfig, recipe: str, domain: int = 19) -> dict[str, dict[str, int]]:
    cfg = build_train_config({"recipe": recipe, "dataset": {"root": "/d"}})
    with torch.device("meta"):  # shapes only: the 0.9B model is never materialised
        model = XVLAModel(config)
        if cfg.lora.enable:
            apply_lora(model, cfg.lora)
    keeper = DomainRowKeeper(model, [domain]) if cfg.train_domain_rows_only else None
    _, stats = count_table(model, select_trainable(model, cfg.trainable), cfg.scheduler.freeze_steps, keeper)
    return stats


def share(stats, key="trainable") -> float:
    return sum(s[key] for s in stats.values()) / sum(s["total"] for s in stats.values())


def test_full_size_recipe_counts():
    config = XVLAConfig()  # Florence-2-large + 24 x 1024 action transformer (the released size)
    official = recipe_counts(config, "official")
    assert sum(s["total"] for s in official.values()) == 879_851_096
    assert share(official) == 1.0
    assert official["vlm"]["warmup"] == 0 and official["transformer_core"]["warmup"] == 0
    assert official["soft_prompts"]["warmup"] == 983_040 and official["action_heads"]["warmup"] == 3_226_200
    prompt = recipe_counts(config, "prompt")
    # one domain: 32 x 1024 prompt + encoder (20 + 32 + 32) x 1024 + 1024 bias + decoder 1024 x 20 + 20
    assert sum(s["trainable"] for s in prompt.values()) == 32_768 + 87_040 + 20_500
    lora = recipe_counts(config, "lora")
    assert 0.007 < share(lora) < 0.012  # ~1% of the parameters (paper: LoRA r=8 + prompts + heads)
    assert lora["vlm"]["trainable"] > 0 and lora["transformer_core"]["trainable"] > 0


def test_tiny_recipe_counts():
    config = tiny_train_config()
    assert share(recipe_counts(config, "lerobot")) == 1.0
    prompt = recipe_counts(config, "prompt", domain=0)
    assert prompt["vlm"]["trainable"] == prompt["transformer_core"]["trainable"] == 0
    assert prompt["soft_prompts"]["trainable"] == 4 * 32


def test_freeze_switches_and_freeze_period():
    model = XVLAModel(tiny_train_config(freeze_language_encoder=True, train_soft_prompts=False))
    trainable = select_trainable(model, "config")
    assert not any(v for n, v in trainable.items() if n.startswith("vlm.language_model"))
    assert not trainable["transformer.soft_prompt_hub.weight"]
    apply_requires_grad(model, trainable, step=0, freeze_steps=5)
    on = {n for n, p in model.named_parameters() if p.requires_grad}
    assert on and all(n.startswith("transformer.action_") for n in on)
    apply_requires_grad(model, trainable, step=5, freeze_steps=5)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, v in trainable.items() if v
    }


def test_lora_wraps_every_linear_layer():
    model = XVLAModel(tiny_train_config())
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    cfg = build_train_config({"recipe": "lora", "dataset": {"root": "/d"}})
    assert apply_lora(model, cfg.lora) == n_linear
    trainable = select_trainable(model, "lora")
    names = [n for n, v in trainable.items() if v]
    assert all(
        ".lora_" in n or n.startswith(("transformer.soft_prompt_hub", "transformer.action_")) for n in names
    )
    assert sum(".lora_A." in n for n in names) == n_linear


def test_domain_row_keeper_keeps_other_rows_exact():
    model = XVLAModel(tiny_train_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = select_trainable(model, "domain")
    apply_requires_grad(model, trainable, 0, 0)
    keeper = DomainRowKeeper(model, [3])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)  # gradients on every row, as a batch of other domains would give
        keeper.mask_gradients()
        opt.step()
        keeper.restore()
    for name, param in model.named_parameters():
        if name in keeper.tables:
            rows = [d for d in range(6) if d != 3]
            assert torch.equal(param[rows], before[name][rows]) and not torch.equal(param[3], before[name][3])
        else:
            assert torch.equal(param, before[name]), name


def test_dry_run_prints_counts_and_lrs(dataset_a, tiny_checkpoint, tmp_path, capsys):
    code = main(["train", "--dataset.root", str(dataset_a), "--policy.path", str(tiny_checkpoint), "--recipe=official",
                 "--steps=100", "--scheduler.freeze_steps=10", "--scheduler.warmup_steps=5", "--dry_run",
                 "--output_dir", str(tmp_path / "dry")])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    for group in PARAM_GROUPS:
        assert group in text
    assert "learning rate per group" in text and "first 10 steps" in text
    assert not (tmp_path / "dry").exists()
