"""Parameter groups, what trains, and keeping other domains' rows fixed.

Groups (by parameter name, SPEC section 5):

- ``vlm``: the Florence-2 encoder (``vlm.*``, LoRA adapters inside it included);
- ``soft_prompts``: ``transformer.soft_prompt_hub``;
- ``action_heads``: ``transformer.action_encoder`` / ``transformer.action_decoder``;
- ``transformer_core``: the rest of the action transformer.

Domain-indexed tables (one row per domain id): the soft prompts, the action heads and, when
``use_hetero_proj``, ``vlm_proj`` / ``aux_visual_proj``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..domains import ACTION_HEADS, SOFT_PROMPTS, canonical_name, check_domain_ids, is_domain_table
from .config import PARAM_GROUPS

_LORA_MARK = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def group_of(name: str) -> str:
    name = canonical_name(name)
    if name.startswith("vlm."):
        return "vlm"
    if name.startswith(SOFT_PROMPTS):
        return "soft_prompts"
    if name.startswith(ACTION_HEADS):
        return "action_heads"
    if name.startswith("transformer."):
        return "transformer_core"
    raise ValueError(f"parameter {name!r} belongs to no group (expected a vlm.* or transformer.* name)")


def is_lora(name: str) -> bool:
    return any(mark in name for mark in _LORA_MARK)


def grouped_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in PARAM_GROUPS}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:  # tied weights (shared / encoder.embed_tokens) are one parameter
            continue
        seen.add(id(param))
        groups[group_of(name)].append((name, param))
    return groups


def select_trainable(model: nn.Module, mode: str) -> dict[str, bool]:
    """The requires_grad each parameter should have after any freeze period, by name.

    ``config``: as the model's ``apply_trainable_flags`` left them (the policy's freeze switches);
    ``domain``: soft prompts + domain-aware layers only; ``lora``: LoRA adapters + soft prompts +
    action heads.
    """
    out = {}
    for name, param in model.named_parameters():
        if mode == "config":
            out[name] = bool(param.requires_grad)
        elif mode == "domain":
            out[name] = is_domain_table(name)
        elif mode == "lora":
            canon = canonical_name(name)
            out[name] = is_lora(name) or canon.startswith(SOFT_PROMPTS) or canon.startswith(ACTION_HEADS)
        else:
            raise ValueError(f"trainable={mode!r} is invalid: use 'config', 'domain' or 'lora'")
    return out


def warmup_groups() -> tuple[str, ...]:
    """Groups that train during the freeze period (the soft-prompt warm-up)."""
    return ("soft_prompts", "action_heads")


def apply_requires_grad(model: nn.Module, trainable: dict[str, bool], step: int, freeze_steps: int) -> bool:
    """Set requires_grad for ``step``; returns True if any flag changed."""
    frozen_phase = step < freeze_steps
    changed = False
    for name, param in model.named_parameters():
        want = trainable.get(name, False)
        if frozen_phase and group_of(name) not in warmup_groups():
            want = False
        if param.requires_grad != want:
            param.requires_grad_(want)
            changed = True
    return changed


def count_table(
    model: nn.Module,
    trainable: dict[str, bool],
    freeze_steps: int = 0,
    domain_rows: DomainRowKeeper | None = None,
    lr_scales: dict[str, float] | None = None,
) -> tuple[str, dict[str, dict[str, int]]]:
    """A printable table of parameters per group: total, trainable, trainable during the freeze."""
    stats = {g: {"total": 0, "trainable": 0, "warmup": 0} for g in PARAM_GROUPS}
    for group, params in grouped_parameters(model).items():
        for name, param in params:
            n = param.numel()
            stats[group]["total"] += n
            if trainable.get(name, False):
                effective = domain_rows.effective_numel(name, param) if domain_rows else n
                stats[group]["trainable"] += effective
                if group in warmup_groups() or freeze_steps <= 0:
                    stats[group]["warmup"] += effective
    train, total = parameter_totals(stats)
    lines = [
        f"{'group':<18}{'parameters':>14}{'trainable':>14}{'share':>9}{'lr scale':>10}"
        + (f"{'first ' + str(freeze_steps) + ' steps':>20}" if freeze_steps > 0 else "")
    ]
    for group in PARAM_GROUPS:
        s = stats[group]
        scale = f"{lr_scales[group]:g}x" if lr_scales else ""
        row = f"{group:<18}{s['total']:>14,}{s['trainable']:>14,}{_pct(s['trainable'], s['total']):>9}{scale:>10}"
        if freeze_steps > 0:
            row += f"{s['warmup']:>20,}"
        lines.append(row)
    lines.append(f"{'total':<18}{total:>14,}{train:>14,}{_pct(train, total):>9}")
    if domain_rows is not None and domain_rows.tables:
        lines.append(f"(domain tables train only the rows of domain(s) {sorted(domain_rows.domains)})")
    return "\n".join(lines), stats


def parameter_totals(counts: dict[str, dict[str, int]]) -> tuple[int, int]:
    """(trainable, total) parameters over the groups of a :func:`count_table` result."""
    return sum(c["trainable"] for c in counts.values()), sum(c["total"] for c in counts.values())


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "-"


class DomainRowKeeper:
    """Train only some domains' rows of the per-domain tables; keep every other row bit-identical.

    After backward the other rows' gradients are zeroed (so clipping and Adam's moments see only the
    trained rows); after each optimizer step the other rows are copied back from a snapshot, which
    also undoes any weight decay on them.
    """

    def __init__(self, model: nn.Module, domains: Iterable[int]):
        self.domains = sorted({int(d) for d in domains})
        self.tables: dict[str, tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = {}
        for name, param in model.named_parameters():
            if not is_domain_table(name) or param.dim() != 2:
                continue
            rows = param.shape[0]
            check_domain_ids(self.domains, rows, f"domain id in {canonical_name(name)}:")
            keep = torch.ones(rows, dtype=torch.bool, device=param.device)
            keep[self.domains] = False
            frozen = param.detach()[keep].clone() if not param.is_meta else param.detach()
            self.tables[name] = (param, keep, frozen)

    def effective_numel(self, name: str, param: nn.Parameter) -> int:
        if name in self.tables:
            return len(self.domains) * param.shape[1]
        return param.numel()

    @torch.no_grad()
    def mask_gradients(self) -> None:
        for param, keep, _ in self.tables.values():
            if param.grad is not None:
                param.grad[keep] = 0

    @torch.no_grad()
    def restore(self) -> None:
        for param, keep, frozen in self.tables.values():
            param.data[keep] = frozen.to(param.dtype)
