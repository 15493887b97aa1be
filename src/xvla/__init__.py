"""xvla: a standalone implementation of X-VLA, the soft-prompted flow-matching Vision-Language-Action model."""

from .utils import quiet_import_noise

quiet_import_noise()  # before anything imports transformers (and with it torchao)

from .actions import BaseActionSpace, build_action_space, register_action, registered_action_modes  # noqa: E402
from .config import XVLAConfig  # noqa: E402
from .policy import XVLAPolicy  # noqa: E402

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
