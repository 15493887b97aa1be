"""The X-VLA recipes' per-group LR schedule as a LeRobot scheduler (``--scheduler.type=xvla_plus_groups``).

The schedule itself is :func:`xvla.train.optim.build_schedules`: each parameter group (vlm, soft_prompts,
action_heads, transformer_core) gets its recipe's scale, freeze period, warm-up and cosine decay.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.optim.schedulers import LRSchedulerConfig
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from xvla.train.config import PARAM_GROUPS, RECIPE_DEFAULTS
from xvla.train.config import OptimizerConfig as XVLAOptimizerConfig
from xvla.train.config import SchedulerConfig as XVLASchedulerConfig
from xvla.train.optim import build_schedules


@LRSchedulerConfig.register_subclass("xvla_plus_groups")
@dataclass
class XVLAGroupSchedulerConfig(LRSchedulerConfig):
    recipe: str = "lerobot"
    num_warmup_steps: int | None = None  # LeRobot's field; the recipe's warm-up is what runs

    def build(self, optimizer: Optimizer, num_training_steps: int) -> LambdaLR:
        if self.recipe not in RECIPE_DEFAULTS:
            raise ValueError(
                f"--scheduler.recipe={self.recipe!r} is unknown: choose one of {sorted(RECIPE_DEFAULTS)}"
            )
        recipe = RECIPE_DEFAULTS[self.recipe]
        schedules = build_schedules(
            XVLAOptimizerConfig(**recipe["optimizer"]),
            XVLASchedulerConfig(**recipe["scheduler"]),
            num_training_steps,
        )
        names = [group.get("name") for group in optimizer.param_groups]
        if any(name not in PARAM_GROUPS for name in names):
            raise ValueError(
                f"the xvla_plus_groups scheduler needs the policy's named parameter groups {list(PARAM_GROUPS)}, "
                f"got {names}: keep --use_policy_training_preset=true"
            )
        # LambdaLR multiplies each group's initial lr (its peak: lr x the group's scale) by the factor.
        return LambdaLR(optimizer, [schedules[name].factor for name in names])
