"""Phase II: adapt a checkpoint to a new robot with its own domain id.

A domain owns one row of every domain-indexed table: the soft prompt and the domain-aware action
encoder / decoder (and the domain-aware VLM projections when ``use_hetero_proj``). Adapting to a new
robot picks a free id (or the one given), optionally copies another domain's rows into it, and
records the id as the config's ``domain_id`` so evaluation and serving use it by default.

Which ids are taken: the checkpoint's trained domains (``XVLAConfig.domains``, written by ``xvla
train``), its own ``domain_id``, and, for a 30-domain model without a domain table (the released
base models), the ids the released base model was trained with (SPEC section 3: 0-18).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import XVLAConfig
from ..domains import RELEASED_DOMAINS, trained_domains
from ..processing import check_domain_ids
from .params import canonical_name, is_domain_table

logger = logging.getLogger(__name__)

def used_domains(config: XVLAConfig, from_checkpoint: bool) -> dict[int, str]:
    """Ids a new domain must not take: the trained ones, and the released table for a released base model."""
    used = trained_domains(config)
    if from_checkpoint and not config.domains and config.num_domains == 30:
        used = {**RELEASED_DOMAINS, **used}
    return used


def pick_domain(requested: int | str | None, num_domains: int, used: dict[int, str]) -> int:
    """'auto' -> the smallest free id; an int is checked against the range (a used id is allowed, with a warning)."""
    if requested == "auto":
        for d in range(num_domains):
            if d not in used:
                return d
        raise ValueError(
            f"no free domain id: all {num_domains} ids are in use ({sorted(used)}). Pass --new_domain.id=<id> to "
            "reuse one explicitly"
        )
    d = int(requested)
    check_domain_ids(d, num_domains, "new_domain.id")
    if d in used:
        logger.warning(
            "new_domain.id %d is already used (%s): its prompt and heads will be overwritten", d, used[d]
        )
    return d


def check_init_from(src: int, trained: dict[int, str]) -> None:
    """Copying an untrained domain starts the new robot from random rows while claiming a trained start."""
    if src not in trained:
        have = ", ".join(f"{d} ({n})" for d, n in sorted(trained.items())) or "none: the model starts from scratch"
        raise ValueError(
            f"new_domain.init_from={src}: domain {src} was never trained in this checkpoint (trained: {have}); "
            "pass --new_domain.init_from=<a trained id> (`xvla info` lists them), or --new_domain.init_from=none for "
            "a fresh prompt and heads"
        )


@torch.no_grad()
def copy_domain(model: nn.Module, src: int, dst: int) -> list[str]:
    """Copy domain ``src``'s rows of every domain-indexed table into row ``dst``; returns the table names."""
    names = []
    for name, param in model.named_parameters():
        if is_domain_table(name) and param.dim() == 2:
            rows = param.shape[0]
            if not (0 <= src < rows and 0 <= dst < rows):
                raise ValueError(
                    f"domain ids {src} -> {dst} out of range for {canonical_name(name)} ({rows} rows)"
                )
            param[dst].copy_(param[src])
            names.append(canonical_name(name))
    return names
