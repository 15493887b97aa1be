"""xvla: a standalone implementation of X-VLA, the soft-prompted flow-matching Vision-Language-Action model."""

from .actions import BaseActionSpace, build_action_space, register_action, registered_action_modes
from .config import XVLAConfig
from .policy import XVLAPolicy

__version__ = "0.1.0"

__all__ = [
    "BaseActionSpace",
    "XVLAConfig",
    "XVLAPolicy",
    "build_action_space",
    "register_action",
    "registered_action_modes",
    "__version__",
]
