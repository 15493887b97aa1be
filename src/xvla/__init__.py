"""xvla: a standalone implementation of X-VLA, the soft-prompted flow-matching Vision-Language-Action model."""

from .utils import quiet_import_noise

quiet_import_noise()  # before anything imports transformers (and with it torchao)

__version__ = "0.1.0"

# The public names load on first use (torch and transformers take seconds): `xvla --help` and the light
# commands start without them.
_LAZY = {
    "BaseActionSpace": ".actions",
    "build_action_space": ".actions",
    "register_action": ".actions",
    "registered_action_modes": ".actions",
    "XVLAConfig": ".config",
    "XVLAPolicy": ".policy",
}

__all__ = [
    "BaseActionSpace",
    "XVLAConfig",
    "XVLAPolicy",
    "build_action_space",
    "register_action",
    "registered_action_modes",
    "__version__",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
