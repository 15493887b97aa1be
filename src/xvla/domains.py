"""The domain ids of the released X-VLA base model, as data.

Every dataset the released base (``2toINF/X-VLA-Pt`` and the fine-tuned ``2toINF/X-VLA-*`` /
``lerobot/xvla-*`` checkpoints derived from it) was trained on owns one soft prompt, addressed by
its domain id. A checkpoint fine-tuned on one of these datasets expects that id at inference
(LIBERO: 3); a new embodiment should take an id that none of them uses.

Source: the official training code's dataset-to-domain table (``datasets/domain_config.py`` of
github.com/2toINF/X-VLA) and the paper (arXiv 2510.10274). Ids 11-17 are the pretraining mixture;
the others are the fine-tuning benchmarks and robots. Ids not listed (19-29 of the 30 slots) are
unused by the release.
"""

from __future__ import annotations

RELEASED_DOMAINS: dict[int, str] = {
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

# Domains the base was pretrained on (Phase I); the rest are fine-tuning datasets.
PRETRAINING_DOMAIN_IDS: frozenset[int] = frozenset(range(11, 18))

LIBERO_DOMAIN_ID = 3


def released_domain_name(domain_id: int) -> str | None:
    """The dataset the released base uses ``domain_id`` for, or None when the release leaves it free."""
    return RELEASED_DOMAINS.get(int(domain_id))


def released_domain_id(name: str) -> int:
    """The id of a released dataset by name (case-insensitive); a clear error for unknown names."""
    wanted = name.strip().lower()
    for domain_id, known in RELEASED_DOMAINS.items():
        if known.lower() == wanted:
            return domain_id
    raise ValueError(f"unknown released domain {name!r}; known: {', '.join(RELEASED_DOMAINS.values())}")


def free_domain_ids(num_domains: int) -> list[int]:
    """Ids in ``[0, num_domains)`` that the released base does not use (safe for a new embodiment)."""
    return [i for i in range(int(num_domains)) if i not in RELEASED_DOMAINS]
