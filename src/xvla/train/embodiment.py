"""Phase II: adapt a checkpoint to a new robot with its own domain id.

A domain owns one row of every domain-indexed table: the soft prompt and the domain-aware action
encoder / decoder (and the domain-aware VLM projections when ``use_hetero_proj``). Adapting to a new
robot picks a free id (or the one given), optionally copies another domain's rows into it, and
records the id as the config's ``domain_id`` so evaluation and serving use it by default.

Which ids are taken is :func:`xvla.domains.used_domains`: the checkpoint's trained domains
(``XVLAConfig.domains``, written by ``xvla train``), its own ``domain_id``, and, on the released base
model only, the ids it was trained with (SPEC section 3: 0-18).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..domains import canonical_name, check_domain_ids, is_domain_table, smallest_free

logger = logging.getLogger(__name__)


def pick_domain(requested: int | str | None, num_domains: int, used: dict[int, str]) -> int:
    """'auto' -> the smallest free id; an int is checked against the range (a used id is allowed, with a warning)."""
    if requested == "auto":
        return smallest_free(used, num_domains, "pass --new_domain.id=<id> to reuse one explicitly")
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
        have = (
            ", ".join(f"{d} ({n})" for d, n in sorted(trained.items()))
            or "none: the model starts from scratch"
        )
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
