"""Alias of :mod:`xvla.actions` under the module name LeRobot and the official code use.

Code ported from ``lerobot.policies.xvla.action_hub`` (or the official ``models.action_hub``) can
change only the package: ``from xvla.action_hub import BaseActionSpace, register_action``.
"""

from .actions import *  # noqa: F403
from .actions import __all__  # noqa: F401
