"""Simulation: Meta-World adapter, embodiment variants, scripted demonstrations and closed-loop evaluation.

Importing this package does not import the simulator; ``xvla.sim.metaworld_env`` does. It sets
``MUJOCO_GL=egl`` (offscreen rendering without a display) unless the variable is already set: MuJoCo
reads it once, when it is first imported.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from .instructions import ALL_TASKS, INSTRUCTIONS, TASK_SETS, instruction, resolve_tasks
from .variants import (
    VARIANTS,
    ActionTransform,
    EmbodimentVariant,
    get_variant,
    register_variant,
    resolve_variants,
)

__all__ = [
    "ALL_TASKS",
    "INSTRUCTIONS",
    "TASK_SETS",
    "VARIANTS",
    "ActionTransform",
    "EmbodimentVariant",
    "get_variant",
    "instruction",
    "register_variant",
    "resolve_tasks",
    "resolve_variants",
]
