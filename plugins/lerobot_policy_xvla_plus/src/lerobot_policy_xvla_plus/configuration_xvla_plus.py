"""``XVLAPlusConfig``: LeRobot's view of an :class:`xvla.XVLAConfig`, registered as policy type ``xvla_plus``.

Every field of ``xvla.XVLAConfig`` is a field here too (``--policy.<field>=...``), generated from it so
that the two never drift apart. Here each one defaults to ``None``, which means "take it from
``init_from`` (when given), else ``XVLAConfig``'s default". The policy settles every field when it is
built and writes the settled values back, so a saved ``config.json`` holds the complete X-VLA config
(plus ``"format": "xvla"``, the marker :meth:`xvla.XVLAPolicy.from_pretrained` reads).

Fields of this plugin alone:

- ``init_from``: any X-VLA checkpoint folder or Hub id, in any format ``xvla`` reads (ours, a LeRobot
  ``xvla`` release such as ``lerobot/xvla-base``, the official ``2toINF/X-VLA-*``). The weights and the
  architecture come from it; fields given on the command line override its values.
- ``recipe``: the optimizer and schedule ``lerobot-train`` uses, from ``xvla.train``'s recipes
  (``lerobot`` or ``official``; see docs/training.md).
- ``format``: always ``"xvla"`` (read by ``xvla``; do not change).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import NormalizationMode
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import LRSchedulerConfig

import xvla
from xvla.train.config import RECIPE_DEFAULTS
from xvla.train.config import OptimizerConfig as XVLAOptimizerConfig
from xvla.train.config import SchedulerConfig as XVLASchedulerConfig

TYPE_NAME = "xvla_plus"
# Recipes whose whole meaning fits LeRobot's loop (one optimizer, LR schedule per group). ``prompt`` and
# ``lora`` also add a fresh domain row / LoRA weights: run those with ``xvla train``.
LEROBOT_RECIPES = ("lerobot", "official")
# XVLAConfig fields that PreTrainedConfig already has.
_INHERITED = {f.name for f in dataclasses.fields(PreTrainedConfig)}


def xvla_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(xvla.XVLAConfig) if f.name not in _INHERITED]


def _optional_fields() -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(xvla.XVLAConfig)
    out = []
    for name in xvla_field_names():
        kind = hints[name]
        if type(None) not in typing.get_args(kind):
            kind = kind | None
        out.append((name, kind, field(default=None)))
    return out


class _XVLAPlusBase(PreTrainedConfig):
    """Methods of the generated config class (its fields are built below)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recipe not in LEROBOT_RECIPES:
            raise ValueError(
                f"--policy.recipe={self.recipe!r} is not available in lerobot-train: choose one of "
                f"{list(LEROBOT_RECIPES)} (the 'prompt' and 'lora' recipes run with `xvla train`)"
            )
        if self.format != "xvla":
            raise ValueError(
                f"--policy.format={self.format!r} is invalid: it marks the checkpoint format, always 'xvla'"
            )

    # ------------------------------------------------------------------ X-VLA's config
    def xvla_overrides(self) -> dict[str, Any]:
        """The X-VLA fields that are set (not None)."""
        return {name: getattr(self, name) for name in xvla_field_names() if getattr(self, name) is not None}

    def settle(self, xvla_config: xvla.XVLAConfig) -> None:
        """Write the settled X-VLA config back into these fields (what config.json then holds)."""
        data = xvla_config.to_dict()
        for name in xvla_field_names():
            value = data[name]
            if name in ("image_size", "resize_imgs_with_padding") and value is not None:
                value = tuple(value)
            if name == "domains" and value is not None:
                value = {int(k): v for k, v in value.items()}
            setattr(self, name, value)

    # ------------------------------------------------------------------ LeRobot's contract
    @property
    def observation_delta_indices(self) -> None:
        return None

    @property
    def action_delta_indices(self) -> list[int]:
        return list(range(self.chunk_size or xvla.XVLAConfig.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None

    def _recipe(self) -> tuple[XVLAOptimizerConfig, XVLASchedulerConfig]:
        recipe = RECIPE_DEFAULTS[self.recipe]
        return XVLAOptimizerConfig(**recipe["optimizer"]), XVLASchedulerConfig(**recipe["scheduler"])

    def get_optimizer_preset(self) -> AdamWConfig:
        opt, _ = self._recipe()
        return AdamWConfig(
            lr=opt.lr,
            betas=tuple(opt.betas),
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            grad_clip_norm=opt.grad_clip_norm,
        )

    def get_scheduler_preset(self) -> LRSchedulerConfig:
        from .schedule import XVLAGroupSchedulerConfig

        _, sched = self._recipe()
        return XVLAGroupSchedulerConfig(recipe=self.recipe, num_warmup_steps=sched.warmup_steps)

    def validate_features(self) -> None:
        # Feature checks need the checkpoint's cameras and widths: the policy makes them when it is built.
        return None


_PLUGIN_FIELDS = [
    ("init_from", str | None, field(default=None)),
    ("recipe", str, field(default="lerobot")),
    ("format", str, field(default="xvla")),
    # X-VLA is trained on raw values; LeRobot's normalizer step stays an identity.
    (
        "normalization_mapping",
        dict[str, NormalizationMode],
        field(
            default_factory=lambda: {
                "VISUAL": NormalizationMode.IDENTITY,
                "STATE": NormalizationMode.IDENTITY,
                "ACTION": NormalizationMode.IDENTITY,
            }
        ),
    ),
]

XVLAPlusConfig = dataclass(
    type(
        "XVLAPlusConfig",
        (_XVLAPlusBase,),
        {
            "__module__": __name__,
            "__doc__": "LeRobot config of the xvla_plus policy: the fields of xvla.XVLAConfig (None = from "
            "init_from or XVLAConfig's default) + init_from, recipe, format.",
            "__annotations__": {name: kind for name, kind, _ in _PLUGIN_FIELDS + _optional_fields()},
            **{name: default for name, _, default in _PLUGIN_FIELDS + _optional_fields()},
        },
    )
)
XVLAPlusConfig = PreTrainedConfig.register_subclass(TYPE_NAME)(XVLAPlusConfig)
