"""LoRA adapters (peft) on the linear layers of X-VLA, and merged exports for ``from_pretrained``.

Adapters are injected in place (``peft.inject_adapter_in_model``): parameter names gain
``.base_layer.`` / ``.lora_A.default.`` / ``.lora_B.default.``. A saved model is always the merged
one (W + scale * B @ A, computed out of place, so training continues on the exact unmerged values);
resuming needs the base checkpoint plus the adapter tensors kept in the training state.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import LoraConfig

ADAPTER = "default"


def _peft():
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the lora recipe needs peft: `pip install peft` (or `pip install 'xvla[train]'`)"
        ) from exc
    return peft


def linear_module_names(model: nn.Module, exclude: list[str] | None = None) -> list[str]:
    exclude = exclude or []
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(e in name for e in exclude)
    ]


def apply_lora(model: nn.Module, cfg: LoraConfig) -> int:
    """Wrap every nn.Linear of ``model`` with a LoRA adapter; returns the number of wrapped layers."""
    peft = _peft()
    targets = linear_module_names(model, cfg.exclude)
    if not targets:
        raise ValueError("LoRA: the model has no nn.Linear layer left after lora.exclude")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    config = peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none"
    )
    peft.inject_adapter_in_model(config, model)
    # inject_adapter_in_model freezes everything but the adapters; the caller decides what trains.
    for name, param in model.named_parameters():
        if name in flags:
            param.requires_grad_(flags[name])
    return len(targets)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if ".lora_" in n}


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every LoRA layer merged into a plain ``weight`` (original key names)."""
    peft = _peft()
    lora_layers = {name: m for name, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            module_name, _, leaf = key.rpartition(".base_layer.")
            if leaf == "weight" and module_name in lora_layers:
                layer = lora_layers[module_name]
                delta = layer.get_delta_weight(ADAPTER) if ADAPTER in layer.lora_A else 0
                value = value + delta.to(value.dtype)
            key = f"{module_name}.{leaf}"
        out[key] = value.detach()
    return out
