"""The action registry: how each embodiment's actions are laid out, trained and decoded.

An action space tells the model four things about a robot's action vector:

- ``dim_action``: the width the model predicts (the "model dim"; padded spaces predict more
  channels than the robot uses);
- ``gripper_idx``: which channels are grippers;
- ``compute_loss(pred, target)``: a dict of named loss terms (the training loss is their sum);
- ``preprocess(proprio, action)``: what the network sees (e.g. gripper channels zeroed, padding);
- ``postprocess(action)``: what the robot gets (e.g. sigmoid on gripper logits, padding trimmed).

Register your own with ``@register_action("name")`` and select it with ``XVLAConfig.action_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTION_REGISTRY: dict[str, type[BaseActionSpace]] = {}


class ActionSpaceExistsError(KeyError, ValueError):
    """A name is registered already (a KeyError, as in LeRobot and the official code, and a ValueError)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def register_action(name: str, override: bool = False):
    """Class decorator that makes an action space selectable by ``action_mode=name``.

    A name that is registered already is refused (two spaces silently sharing a name would change
    what a checkpoint means); ``override=True`` replaces it on purpose.
    """

    def wrap(cls):
        key = name.lower()
        previous = ACTION_REGISTRY.get(key)
        if previous is not None and previous is not cls and not override:
            raise ActionSpaceExistsError(
                f"action space '{key}' is already registered by {previous.__module__}.{previous.__qualname__}: "
                f"pick another name, or use @register_action('{key}', override=True) to replace it on purpose"
            )
        ACTION_REGISTRY[key] = cls
        cls.name = key
        return cls

    return wrap


def registered_action_modes() -> list[str]:
    return sorted(ACTION_REGISTRY)


def build_action_space(name: str, **kwargs) -> BaseActionSpace:
    """Instantiate a registered action space. ``auto`` takes ``real_dim`` and ``max_dim``."""
    key = str(name).lower()
    if key not in ACTION_REGISTRY:
        raise ValueError(
            f"action_mode '{name}' is not registered. Registered action modes: {registered_action_modes()}. "
            "Define a new one with @register_action('your_name')."
        )
    cls = ACTION_REGISTRY[key]
    try:
        return cls(**kwargs)
    except TypeError:
        if kwargs:
            # Spaces that take no arguments ignore the generic ones (real_dim/max_dim/...).
            return cls()
        raise


def build_action_space_for(config: Any) -> BaseActionSpace:
    """The action space a config (or an adapter's metadata, with the same field names) declares."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    mode = str(get("action_mode")).lower()
    if mode == "auto":
        return build_action_space(
            mode,
            real_dim=get("real_action_dim"),
            max_dim=get("max_action_dim"),
            loss_weight=get("auto_loss_weight", 1.0),
        )
    return build_action_space(mode)


class BaseActionSpace(nn.Module):
    """Base class for action spaces. Subclasses set ``dim_action`` and ``gripper_idx``."""

    name: str = "base"
    dim_action: int = 0
    gripper_idx: tuple[int, ...] = ()

    def __init__(self):
        super().__init__()

    @property
    def real_dim(self) -> int:
        """Width of the action the robot consumes (after postprocess)."""
        return self.dim_action

    def compute_loss(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(pred, target)")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.compute_loss(pred, target)

    def preprocess(self, proprio: torch.Tensor, action: torch.Tensor, mode: str = "train"):
        return proprio, action

    def postprocess(self, action: torch.Tensor) -> torch.Tensor:
        return action

    def invert_postprocess(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Robot action(s) [..., real_dim] -> (model-space action [..., dim_action], channel mask [dim_action]).

        The inverse of :meth:`postprocess`, used to constrain sampling to actions the robot has already
        committed to (real-time chunking). The mask is False for model channels the robot never sees
        (padding), which therefore cannot be constrained.
        """
        if type(self).postprocess is not BaseActionSpace.postprocess:
            raise NotImplementedError(
                f"action space '{self.name}' overrides postprocess() but not invert_postprocess(): implement "
                "invert_postprocess(action) -> (model action, channel mask) to use a committed action prefix"
            )
        _check_width(self, action)
        return action, torch.ones(self.dim_action, dtype=torch.bool, device=action.device)


def _check_width(space: BaseActionSpace, action: torch.Tensor) -> None:
    if action.shape[-1] != space.real_dim:
        raise ValueError(
            f"the action prefix has {action.shape[-1]} channels but action_mode '{space.name}' gives the robot "
            f"{space.real_dim}: pass the actions exactly as the policy returned them"
        )


def _logit_channels(x: torch.Tensor, idx: Sequence[int], eps: float = 1e-4) -> torch.Tensor:
    """Inverse of the sigmoid on gripper channels; 0 and 1 are clamped to finite logits (about +-9.2)."""
    x = x.clone()
    x[..., list(idx)] = torch.logit(x[..., list(idx)].clamp(eps, 1 - eps))
    return x


def _check_shapes(space: BaseActionSpace, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"action dimension mismatch for action_mode '{space.name}': prediction {tuple(pred.shape)} vs "
            f"target {tuple(target.shape)}. The dataset's action must have {space.dim_action} dims for this "
            "mode; use action_mode='auto' (pads to max_action_dim) or register a custom action space."
        )


def _zero_channels(x: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    x = x.clone()
    if x.shape[-1] > max(idx):
        x[..., list(idx)] = 0.0
    return x


def _sigmoid_channels(x: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    if x.shape[-1] > max(idx):
        x = x.clone()
        x[..., list(idx)] = torch.sigmoid(x[..., list(idx)])
    return x


def _pad_last(x: torch.Tensor, width: int) -> torch.Tensor:
    if x.shape[-1] >= width:
        return x
    return F.pad(x, (0, width - x.shape[-1]))


def _mse(pred: torch.Tensor, target: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    idx = list(idx)
    return F.mse_loss(pred[..., idx], target[..., idx])


class _EndEffector6D(BaseActionSpace):
    """Two arms x [xyz(3), rot6d(6), gripper(1)]; a single arm zero-pads the second half."""

    dim_action = 20
    gripper_idx = (9, 19)
    xyz_idx = (0, 1, 2, 10, 11, 12)
    rot_idx = (3, 4, 5, 6, 7, 8, 13, 14, 15, 16, 17, 18)
    xyz_weight = 500.0
    rot_weight = 10.0

    def _xyz_rot_losses(self, pred, target):
        # Each arm is averaged on its own and the two arms summed (as the checkpoints were trained).
        position = _mse(pred, target, self.xyz_idx[:3]) + _mse(pred, target, self.xyz_idx[3:])
        rotation = _mse(pred, target, self.rot_idx[:6]) + _mse(pred, target, self.rot_idx[6:])
        return position * self.xyz_weight, rotation * self.rot_weight


@register_action("ee6d")
class EE6DActionSpace(_EndEffector6D):
    """End-effector pose (xyz + 6D rotation) and a binary gripper trained with BCE."""

    gripper_weight = 1.0

    def compute_loss(self, pred, target):
        _check_shapes(self, pred, target)
        position, rotation = self._xyz_rot_losses(pred, target)
        gripper = sum(
            F.binary_cross_entropy_with_logits(pred[..., g], target[..., g]) for g in self.gripper_idx
        ) / len(self.gripper_idx)
        return {
            "position_loss": position,
            "rotate6D_loss": rotation,
            "gripper_loss": gripper * self.gripper_weight,
        }

    def preprocess(self, proprio, action, mode="train"):
        return _zero_channels(proprio, self.gripper_idx), _zero_channels(action, self.gripper_idx)

    def postprocess(self, action):
        return _sigmoid_channels(action, self.gripper_idx)

    def invert_postprocess(self, action):
        _check_width(self, action)
        return _logit_channels(action, self.gripper_idx), torch.ones(
            self.dim_action, dtype=torch.bool, device=action.device
        )


@register_action("agibot_ee6d")
class AgibotEE6DActionSpace(_EndEffector6D):
    """AgiBot variant of ee6d: continuous grippers (MSE x10), no pre/post-processing."""

    gripper_weight = 10.0

    def compute_loss(self, pred, target):
        _check_shapes(self, pred, target)
        position, rotation = self._xyz_rot_losses(pred, target)
        return {
            "position_loss": position,
            "rotate6D_loss": rotation,
            "gripper_loss": _mse(pred, target, self.gripper_idx) * self.gripper_weight,
        }


@register_action("joint")
class JointActionSpace(BaseActionSpace):
    """Two arms x [6 joints, gripper]: joints MSE, binary grippers BCE x0.1."""

    dim_action = 14
    gripper_idx = (6, 13)
    joints_weight = 1.0
    gripper_weight = 0.1

    def compute_loss(self, pred, target):
        _check_shapes(self, pred, target)
        joints = [i for i in range(pred.shape[-1]) if i not in self.gripper_idx]
        gripper = sum(
            F.binary_cross_entropy_with_logits(pred[..., g], target[..., g]) for g in self.gripper_idx
        ) / len(self.gripper_idx)
        return {
            "joints_loss": _mse(pred, target, joints) * self.joints_weight,
            "gripper_loss": gripper * self.gripper_weight,
        }

    def preprocess(self, proprio, action, mode="train"):
        return _zero_channels(proprio, self.gripper_idx), _zero_channels(action, self.gripper_idx)

    def postprocess(self, action):
        return _sigmoid_channels(action, self.gripper_idx)

    def invert_postprocess(self, action):
        _check_width(self, action)
        return _logit_channels(action, self.gripper_idx), torch.ones(
            self.dim_action, dtype=torch.bool, device=action.device
        )


class _PaddedActionSpace(BaseActionSpace):
    """A robot action of ``real_dim`` channels predicted inside a wider model action."""

    dim_action = 20
    _real_dim = 20

    @property
    def real_dim(self) -> int:
        return self._real_dim

    def to_model_dim(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        if width == self.dim_action:
            return x
        if width != self.real_dim:
            raise ValueError(
                f"action dimension mismatch for action_mode '{self.name}': got {width} channels, expected "
                f"{self.real_dim} (robot) or {self.dim_action} (model). Check the dataset's action feature "
                "or use action_mode='auto'."
            )
        return _pad_last(x, self.dim_action)

    def to_real_dim(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.real_dim]

    def preprocess(self, proprio, action, mode="train"):
        return proprio, self.to_model_dim(action)

    def postprocess(self, action):
        return self.to_real_dim(action)

    def invert_postprocess(self, action):
        _check_width(self, action)
        return _pad_last(action, self.dim_action), self._real_channels(action.device)

    def _real_channels(self, device) -> torch.Tensor:
        mask = torch.zeros(self.dim_action, dtype=torch.bool, device=device)
        mask[: self.real_dim] = True
        return mask


@register_action("franka_joint7")
class FrankaJoint7ActionSpace(_PaddedActionSpace):
    """Franka: 7 joint targets predicted in a 20-wide model action."""

    _real_dim = 7

    def compute_loss(self, pred, target):
        pred, target = self.to_model_dim(pred), self.to_model_dim(target)
        return {"joints_loss": _mse(pred, target, range(self.real_dim))}


@register_action("so101_bimanual")
class SO101BimanualActionSpace(_PaddedActionSpace):
    """Two SO-101 arms x [5 joints, gripper] = 12 channels inside a 20-wide model action."""

    _real_dim = 12
    gripper_idx = (5, 11)

    def compute_loss(self, pred, target):
        pred, target = self.to_model_dim(pred), self.to_model_dim(target)
        return {
            "joints_loss": _mse(pred, target, range(12)),
            "gripper_loss": _mse(pred, target, self.gripper_idx),
            "left_arm_loss": _mse(pred, target, range(0, 6)),
            "right_arm_loss": _mse(pred, target, range(6, 12)),
        }

    def preprocess(self, proprio, action, mode="train"):
        # 12-wide proprio is padded like the action; other widths are left as the model was built for.
        if proprio.shape[-1] == self.real_dim:
            proprio = _pad_last(proprio, self.dim_action)
        return _zero_channels(proprio, self.gripper_idx), _zero_channels(
            self.to_model_dim(action), self.gripper_idx
        )

    def postprocess(self, action):
        if action.shape[-1] < self.real_dim:
            raise ValueError(f"so101_bimanual expects at least 12 action channels, got {action.shape[-1]}")
        return self.to_real_dim(_sigmoid_channels(action, self.gripper_idx))

    def invert_postprocess(self, action):
        _check_width(self, action)
        return _pad_last(_logit_channels(action, self.gripper_idx), self.dim_action), self._real_channels(
            action.device
        )


@register_action("auto")
class AutoActionSpace(_PaddedActionSpace):
    """Any robot: the dataset's action (``real_dim`` wide) padded to ``max_dim``; MSE on the real part.

    ``loss_weight`` is 1.0 in LeRobot and 100.0 in the official training code.
    """

    def __init__(self, real_dim: int | None = None, max_dim: int = 20, loss_weight: float = 1.0):
        super().__init__()
        max_dim = int(max_dim)
        real_dim = max_dim if real_dim is None else int(real_dim)
        if not 0 < real_dim <= max_dim:
            raise ValueError(
                f"action_mode 'auto': the action has {real_dim} dims but max_action_dim is {max_dim}; "
                f"set max_action_dim >= {real_dim}"
            )
        self.dim_action = max_dim
        self._real_dim = real_dim
        self.loss_weight = float(loss_weight)

    def to_model_dim(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        if width == self.dim_action:
            return x
        if width > self.real_dim:
            x = x[..., : self.real_dim]
        return _pad_last(_pad_last(x, self.real_dim), self.dim_action)

    def compute_loss(self, pred, target):
        pred, target = self.to_model_dim(pred), self.to_model_dim(target)
        return {"joints_loss": _mse(pred, target, range(self.real_dim)) * self.loss_weight}


__all__ = [
    "ACTION_REGISTRY",
    "AgibotEE6DActionSpace",
    "AutoActionSpace",
    "BaseActionSpace",
    "EE6DActionSpace",
    "FrankaJoint7ActionSpace",
    "JointActionSpace",
    "SO101BimanualActionSpace",
    "build_action_space",
    "register_action",
    "registered_action_modes",
]
