"""AdamW over named parameter groups and a per-group LR schedule that resumes exactly.

LR of group g at optimizer step s (0-based; the value used by the s-th update)::

    lr_g(s) = optimizer.lr * scale_g * f_g(s)

    start_g  = scheduler.freeze_steps for groups frozen during the prompt warm-up (vlm, transformer_core),
               0 for soft_prompts and action_heads
    warm_g   = soft_prompt_warmup_steps for soft_prompts, else warmup_steps
    f_g(s)   = 0                                           if s < start_g        (frozen)
             = (s - start_g + 1) / warm_g                  if s - start_g < warm_g (linear warm-up)
             = r + (1 - r) * (1 + cos(pi * p)) / 2         otherwise (cosine; "constant": 1)
    p        = clamp((s - start_g - warm_g) / (decay_end - start_g - warm_g), 0, 1)
    decay_end = scheduler.decay_steps or --steps,  r = scheduler.min_lr_ratio

The schedule is a pure function of the step, so its state is the step alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import PARAM_GROUPS, OptimizerConfig, SchedulerConfig
from .params import grouped_parameters, warmup_groups


@dataclass
class GroupSchedule:
    name: str
    peak_lr: float
    start: int
    warmup: int
    decay_end: int
    min_ratio: float
    kind: str = "cosine"

    def factor(self, step: int) -> float:
        s = step - self.start
        if s < 0:
            return 0.0
        if self.warmup > 0 and s < self.warmup:
            return (s + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        begin = self.start + self.warmup
        span = max(1, self.decay_end - begin)
        progress = min(1.0, max(0.0, (step - begin) / span))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr(self, step: int) -> float:
        return self.peak_lr * self.factor(step)


class GroupLRScheduler:
    """Sets each param group's ``lr`` from its :class:`GroupSchedule`; ``state_dict`` is the step."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedules: dict[str, GroupSchedule], step: int = 0):
        self.optimizer = optimizer
        self.schedules = schedules
        self.step_count = step
        self.apply()

    def lrs(self, step: int | None = None) -> dict[str, float]:
        step = self.step_count if step is None else step
        return {name: sched.lr(step) for name, sched in self.schedules.items()}

    def apply(self) -> None:
        lrs = self.lrs()
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[group["name"]]

    def step(self) -> None:
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.apply()


def build_schedules(
    opt: OptimizerConfig, sched: SchedulerConfig, total_steps: int
) -> dict[str, GroupSchedule]:
    warmup, decay_steps, freeze = sched.warmup_steps, sched.decay_steps, sched.freeze_steps
    prompt_warmup = sched.soft_prompt_warmup_steps if sched.soft_prompt_warmup_steps is not None else warmup
    if decay_steps is None:
        decay_steps = total_steps
    elif sched.auto_scale and total_steps < decay_steps:
        ratio = total_steps / decay_steps
        warmup = int(warmup * ratio)
        prompt_warmup = int(prompt_warmup * ratio)
        decay_steps = total_steps
    out = {}
    for name in PARAM_GROUPS:
        start = 0 if name in warmup_groups() else freeze
        out[name] = GroupSchedule(
            name=name,
            peak_lr=opt.lr * opt.scale(name),
            start=start,
            warmup=prompt_warmup if name == "soft_prompts" else warmup,
            decay_end=decay_steps,
            min_ratio=sched.min_lr_ratio,
            kind=sched.type,
        )
    return out


def build_optimizer(
    model: nn.Module, trainable: dict[str, bool], opt: OptimizerConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with one param group per named group, holding every parameter that will ever train.

    Parameters frozen for a while (requires_grad False, grad None) are skipped by AdamW until they
    get gradients, so one optimizer serves the whole run and its state_dict stays stable.
    """
    param_groups = []
    for name, params in grouped_parameters(model).items():
        chosen = [p for n, p in params if trainable.get(n, False)]
        if chosen:
            param_groups.append({"params": chosen, "name": name, "lr": 0.0, "weight_decay": opt.weight_decay})
    if not param_groups:
        raise ValueError(
            "nothing to train: every parameter is frozen (check the freeze switches and the recipe)"
        )
    kwargs = dict(lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps, weight_decay=opt.weight_decay)
    if fused is not None:
        kwargs["fused"] = fused
    return torch.optim.AdamW(param_groups, **kwargs)
