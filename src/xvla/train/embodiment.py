"""Phase II: adapt a checkpoint to a new robot with its own domain id.

A domain owns one row of every domain-indexed table: the soft prompt and the domain-aware action
encoder / decoder (and the domain-aware VLM projections when ``use_hetero_proj``). Adapting to a new
robot picks a free id (or the one given), optionally copies another domain's rows into it, and
records the id as the config's ``domain_id`` so evaluation and serving use it by default.

Which ids are taken: those listed in the checkpoint's ``domains.json`` (written by ``xvla train``),
the checkpoint's own ``domain_id``, and, for a 30-domain model without ``domains.json`` (the released
base models), the ids the released base model was trained with (SPEC section 3: 0-18).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .params import canonical_name, is_domain_table

logger = logging.getLogger(__name__)

DOMAINS_FILE = "domains.json"
# Fine-tuning domains 0-10 and 18, pretraining domains 11-17 of the released base model.
RELEASED_DOMAINS = {
    0: "Bridge", 1: "RT1", 2: "Calvin", 3: "libero", 4: "widowx-air", 5: "AIR-AGILEX-HQ", 6: "robotwin2",
    7: "robocasa-human", 8: "VLABench", 9: "AGIBOT-challenge", 10: "AIR-AGILEX", 11: "robomind-franka",
    12: "robomind-ur", 13: "Droid-Left", 14: "Droid-Right", 15: "AGIBOT", 16: "robomind-agilex",
    17: "robomind-franka-dual", 18: "AIRBOT",
}  # fmt: skip


def read_domains(folder: str | Path | None) -> dict[int, str]:
    if folder is None:
        return {}
    path = Path(folder) / DOMAINS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {int(k): str(v) for k, v in data.get("domains", {}).items()}


def write_domains(folder: str | Path, domains: dict[int, str]) -> None:
    from ..utils import atomic_write_text

    payload = {"domains": {str(k): v for k, v in sorted(domains.items())}}
    atomic_write_text(Path(folder) / DOMAINS_FILE, json.dumps(payload, indent=2))


def used_domains(num_domains: int, config_domain_id: int | None, folder: str | Path | None) -> dict[int, str]:
    used = read_domains(folder)
    if not used and num_domains == 30 and folder is not None:
        used = dict(RELEASED_DOMAINS)
    if config_domain_id is not None and config_domain_id not in used:
        used[int(config_domain_id)] = "checkpoint default"
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
    if not 0 <= d < num_domains:
        raise ValueError(
            f"new_domain.id {d} is out of range: this checkpoint has num_domains={num_domains}, so ids must be "
            f"in [0, {num_domains - 1}]"
        )
    if d in used:
        logger.warning(
            "new_domain.id %d is already used (%s): its prompt and heads will be overwritten", d, used[d]
        )
    return d


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
