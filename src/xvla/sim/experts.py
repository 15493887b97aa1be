"""Meta-World's scripted experts behind the policy interface, for demonstrations and as a baseline.

``ScriptedExpertPolicy`` answers ``predict_action_chunk`` / ``select_action`` like ``XVLAPolicy``,
in a variant's action space, so ``xvla eval expert`` runs the experts through exactly the rollout
code that evaluates a checkpoint (the upper bound a learned policy is compared with).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .variants import EmbodimentVariant, get_variant


class ScriptedExpertPolicy:
    """Meta-World's expert for every task, answering in ``variant``'s action space (one action per chunk)."""

    # The rollout code passes Meta-World's own observation (``observation.environment_state``) and
    # the task name only to policies that declare they need them.
    uses_environment_state = True

    def __init__(self, variant: str | EmbodimentVariant = "sawyer"):
        self.variant = get_variant(variant)
        self._experts: dict[str, Any] = {}

    def reset(self) -> None:
        pass

    def eval(self) -> ScriptedExpertPolicy:
        return self

    def _expert(self, task: str):
        if task not in self._experts:
            from .metaworld_env import expert_policy

            self._experts[task] = expert_policy(task)
        return self._experts[task]

    def predict_action_chunk(self, batch: dict[str, Any], **_: Any) -> np.ndarray:
        if "observation.environment_state" not in batch or "task_name" not in batch:
            raise KeyError(
                "the scripted expert needs 'observation.environment_state' (Meta-World's observation) and "
                "'task_name' in the batch: run it through xvla.sim.rollout.run_rollouts"
            )
        raw = np.asarray(batch["observation.environment_state"], dtype=np.float64)
        actions = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gains that saturate: the env clips to [-1, 1] anyway
            for obs, task in zip(raw, batch["task_name"], strict=True):
                env_action = np.clip(self._expert(task).get_action(obs), -1.0, 1.0)
                actions.append(self.variant.action.from_env(env_action))
        return np.stack(actions)[:, None, :]

    def select_action(self, batch: dict[str, Any]) -> np.ndarray:
        return self.predict_action_chunk(batch)[:, 0]
