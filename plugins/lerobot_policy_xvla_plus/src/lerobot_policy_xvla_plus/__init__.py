"""LeRobot policy plugin ``xvla_plus``: the ``xvla`` library's X-VLA inside lerobot-train / eval / record.

LeRobot imports this package by its distribution name (``lerobot_policy_*``); importing it registers
the ``xvla_plus`` policy type and the ``xvla_plus_groups`` scheduler. See docs/lerobot.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

SUPPORTED_LEROBOT = (
    (0, 4, 4),
    (0, 5, 0),
)  # [min, max): the LeRobot releases whose contracts this plugin follows
SUPPORTED_TEXT = ">=0.4.4,<0.5"


def _check_lerobot() -> str:
    try:
        found = version("lerobot")
    except PackageNotFoundError:
        raise ImportError(
            f"lerobot_policy_xvla_plus needs LeRobot {SUPPORTED_TEXT}: pip install 'lerobot[async]==0.4.4'"
        ) from None
    parts = tuple(int(p) for p in (found.split("+")[0].split(".") + ["0", "0"])[:3] if p.isdigit())
    if len(parts) != 3 or not (SUPPORTED_LEROBOT[0] <= parts < SUPPORTED_LEROBOT[1]):
        raise ImportError(
            f"lerobot_policy_xvla_plus supports LeRobot {SUPPORTED_TEXT}, but LeRobot {found} is installed: "
            "pip install 'lerobot[async]==0.4.4'"
        )
    return found


LEROBOT_VERSION = _check_lerobot()

from .configuration_xvla_plus import XVLAPlusConfig  # noqa: E402
from .modeling_xvla_plus import XVLAPlusPolicy  # noqa: E402
from .processor_xvla_plus import make_xvla_plus_pre_post_processors  # noqa: E402
from .schedule import XVLAGroupSchedulerConfig  # noqa: E402

__all__ = [
    "XVLAGroupSchedulerConfig",
    "XVLAPlusConfig",
    "XVLAPlusPolicy",
    "make_xvla_plus_pre_post_processors",
]
