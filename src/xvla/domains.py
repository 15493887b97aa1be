"""Domain ids: which robot/dataset each id means in a checkpoint, and the one rule every command uses.

A checkpoint records the domains it was trained for (``XVLAConfig.domains``: id -> name) and its
default domain (``domain_id``). ``xvla eval``, ``xvla eval-offline`` and ``xvla serve`` all resolve
the id with :func:`resolve_domain`: an explicit ``--domain-id`` wins; a domain named by a dataset,
a variant or a request is used when the checkpoint was trained for it (by id or by name);
otherwise the command stops and says which ids exist, instead of silently running an untrained one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The released base model's table (0.9B, 30 ids): fine-tuning domains 0-10 and 18, pretraining 11-17.
RELEASED_DOMAINS = {
    0: "Bridge",
    1: "RT1",
    2: "Calvin",
    3: "libero",
    4: "widowx-air",
    5: "AIR-AGILEX-HQ",
    6: "robotwin2",
    7: "robocasa-human",
    8: "VLABench",
    9: "AGIBOT-challenge",
    10: "AIR-AGILEX",
    11: "robomind-franka",
    12: "robomind-ur",
    13: "Droid-Left",
    14: "Droid-Right",
    15: "AGIBOT",
    16: "robomind-agilex",
    17: "robomind-franka-dual",
    18: "AIRBOT",
}


DATASET_DOMAIN_FILE = "meta/xvla_sim.json"  # written by `xvla gen-demos`: the variant's domain id

# Prefixes that wrappers (DDP, FSDP, torch.compile, the policy) add in front of XVLAModel parameter names.
_WRAPPER_PREFIX = re.compile(
    r"^(?:(?:module|_orig_mod|_fsdp_wrapped_module|_checkpoint_wrapped_module|policy|model)\.)+"
)
ACTION_HEADS = ("transformer.action_encoder.", "transformer.action_decoder.")
SOFT_PROMPTS = "transformer.soft_prompt_hub."
_HETERO = (
    "transformer.vlm_proj.fc.",
    "transformer.vlm_proj.bias.",
    "transformer.aux_visual_proj.fc.",
    "transformer.aux_visual_proj.bias.",
)


def canonical_name(name: str) -> str:
    """Strip DDP/FSDP/compile/policy prefixes: the XVLAModel parameter name."""
    return _WRAPPER_PREFIX.sub("", name)


def is_domain_table(name: str) -> bool:
    """A per-domain table (rows indexed by domain id): what an adapter carries and a domain-only recipe trains."""
    name = canonical_name(name)
    return name.startswith(SOFT_PROMPTS) or name.startswith(ACTION_HEADS) or name.startswith(_HETERO)


def check_domain_ids(ids: Any, num_domains: int, name: str = "domain_id") -> None:
    """The one range check of domain ids (an int or a sequence/tensor of them); ValueError names the fix."""
    if hasattr(ids, "reshape") and hasattr(ids, "tolist"):  # a tensor or array (no torch import here)
        values = [int(v) for v in ids.reshape(-1).tolist()]
    else:  # plain numbers: no tensor, so this also works under a meta-device context
        values = [int(v) for v in (ids if isinstance(ids, (list, tuple, set)) else [ids])]
    bad = [v for v in values if not 0 <= v < num_domains]
    if bad:
        raise ValueError(
            f"{name} {bad[0]} is out of range: this checkpoint has num_domains={num_domains}, so ids must "
            f"be in [0, {num_domains - 1}] (`xvla info CHECKPOINT` lists its trained domains)"
        )


def dataset_domain(root: str | Path) -> int | None:
    """The domain id a dataset declares (datasets made by ``xvla gen-demos``), else None."""
    path = Path(root) / DATASET_DOMAIN_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("domain_id")
    return None if value is None else int(value)


def trained_domains(config: Any) -> dict[int, str]:
    """The domains a checkpoint knows: its recorded table, else just its default id."""
    if config.domains:
        return dict(sorted(config.domains.items()))
    return {int(config.domain_id): "default"}


def resolve_domain(
    config: Any,
    explicit: int | None = None,
    named: int | None = None,
    named_by: str = "",
    name: str | None = None,
) -> tuple[int, str]:
    """(domain id, why) for a command. ``named`` is what a dataset/variant/request says, ``name`` its label."""
    known = trained_domains(config)
    if explicit is not None:
        check_domain_ids(explicit, config.num_domains, "--domain-id")
        if int(explicit) not in known:
            logger.warning(
                "domain %d was never trained in this checkpoint (trained: %s)", explicit, _fmt(known)
            )
        return int(explicit), "--domain-id"
    by_name = [d for d, n in known.items() if name is not None and n == name]
    if by_name:
        return by_name[0], f"the checkpoint trained domain {by_name[0]} for {name!r}"
    if named is None or int(named) == int(config.domain_id):
        return int(config.domain_id), "the checkpoint's default domain"
    if int(named) in known:
        return int(named), f"{named_by} names domain {named}, which the checkpoint trained"
    raise ValueError(
        f"{named_by} names domain {named} but this checkpoint was trained for {_fmt(known)} (default "
        f"{config.domain_id}): pass --domain-id {config.domain_id} to use the checkpoint's default, or "
        f"--domain-id {named} to run that untrained domain on purpose"
    )


def is_released_base(config: Any) -> bool:
    """A 30-domain checkpoint without its own table is (or descends from) the released base model."""
    return config.num_domains == 30 and not config.domains


def used_domains(config: Any, released: bool | None = None) -> dict[int, str]:
    """The one rule for ids a new domain must not take: the trained ones and, only on the released base model
    (``released``, by default :func:`is_released_base`), the ids of its released table."""
    used = trained_domains(config)
    if is_released_base(config) if released is None else released:
        used = {**RELEASED_DOMAINS, **used}
    return used


def free_domains(config: Any, released: bool | None = None) -> list[int]:
    """Ids :func:`used_domains` leaves free, smallest first."""
    used = used_domains(config, released)
    return [d for d in range(config.num_domains) if d not in used]


def smallest_free(used: Iterable[int], num_domains: int, reuse: str) -> int:
    """The smallest id not in ``used``; when none is left, ValueError with ``reuse``: how to take one anyway."""
    taken = set(used)
    for d in range(num_domains):
        if d not in taken:
            return d
    raise ValueError(f"no free domain id: all {num_domains} ids are in use ({sorted(taken)}); {reuse}")


def describe_domains(config: Any, released: bool) -> dict[str, Any]:
    """What ``xvla info`` prints about domains (``released``: the checkpoint is the released base model)."""
    out: dict[str, Any] = {
        "default_domain_id": int(config.domain_id),
        "trained": {str(d): n for d, n in trained_domains(config).items()},
        "free": free_domains(config, released),
    }
    if released:
        out["released_table"] = {str(d): n for d, n in RELEASED_DOMAINS.items()}
    return out


def _fmt(domains: dict[int, str]) -> str:
    return ", ".join(f"{d} ({n})" for d, n in domains.items())


# LIBERO's id in the released table; `xvla eval --env libero` uses it unless told otherwise.
LIBERO_DOMAIN_ID = 3
PRETRAINING_DOMAIN_IDS = frozenset(range(11, 18))  # the released base's Phase I mixture


def released_domain_name(domain_id: int) -> str | None:
    """The dataset the released base uses ``domain_id`` for, or None when the release leaves it free."""
    return RELEASED_DOMAINS.get(int(domain_id))
