"""Embodiment variants: several "robots" inside one simulator, defined as data.

A variant is what makes one simulated robot differ from another without touching the simulator:

- its cameras: which simulator cameras fill the policy's camera slots, and at what resolution;
- its action space: a linear map of the simulator's xyz delta (rotated / permuted / mirrored /
  scaled frame), an affine map of the gripper command (e.g. inverted sign, or 0..1 instead of
  -1..1), placed into a vector of its own width (the other slots stay zero, like the unused joints
  of a wider robot);
- its control rate: each of its actions is held for ``action_repeat`` simulator steps.

Each variant has its own dataset and its own domain id. ``ActionTransform.from_env`` turns the
simulator's (or a scripted expert's) 4-D action into the variant's action, which is what its dataset
stores and what a policy trained on it outputs; ``ActionTransform.to_env`` maps a policy's action
back to the simulator. Variants are plain dataclasses: register new ones with ``register_variant``
or load them from a JSON file (``get_variant("my_robot.json")``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Meta-World's control step: 5 physics steps of 2.5 ms.
ENV_DT = 0.0125
ENV_ACTION_DIM = 4  # xyz delta in [-1, 1] (x 1 cm per step) + gripper effort in [-1, 1] (+1 closes)


@dataclass(frozen=True)
class ActionTransform:
    """Variant action <-> simulator action.

    ``variant_xyz = scale * P @ Rz(rotation_z_deg) @ env_xyz`` where ``P`` permutes and mirrors the axes
    (``variant_xyz[i] = signs[i] * rotated[permutation[i]]``); ``variant_gripper = gripper_scale * env_gripper
    + gripper_offset``. The variant's action has ``action_dim`` slots: xyz go to ``xyz_indices``, the gripper
    to ``gripper_index``, every other slot is 0 (and ignored on the way back).
    """

    rotation_z_deg: float = 0.0
    permutation: tuple[int, int, int] = (0, 1, 2)
    signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    gripper_scale: float = 1.0
    gripper_offset: float = 0.0
    action_dim: int = 4
    xyz_indices: tuple[int, int, int] = (0, 1, 2)
    gripper_index: int = 3

    def __post_init__(self) -> None:
        for name in ("permutation", "signs", "xyz_indices"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if sorted(self.permutation) != [0, 1, 2]:
            raise ValueError(f"permutation={self.permutation} is invalid: it must order the axes 0, 1, 2")
        if len(self.signs) != 3 or any(abs(abs(float(s)) - 1.0) > 1e-9 for s in self.signs):
            raise ValueError(f"signs={self.signs} is invalid: give three values, each +1 or -1")
        if not self.scale or not np.isfinite(self.scale):
            raise ValueError(f"scale={self.scale} is invalid: it must be a finite non-zero number")
        if not self.gripper_scale or not np.isfinite(self.gripper_scale):
            raise ValueError(
                f"gripper_scale={self.gripper_scale} is invalid: it must be a finite non-zero number"
            )
        slots = list(self.xyz_indices) + [self.gripper_index]
        if (
            len(self.xyz_indices) != 3
            or len(set(slots)) != 4
            or not all(0 <= i < self.action_dim for i in slots)
        ):
            raise ValueError(
                f"xyz_indices={self.xyz_indices} and gripper_index={self.gripper_index} must be 4 distinct slots "
                f"inside action_dim={self.action_dim}"
            )

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 map from simulator xyz to variant xyz."""
        theta = np.deg2rad(self.rotation_z_deg)
        c, s = np.cos(theta), np.sin(theta)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        perm = np.zeros((3, 3))
        for i, (j, sign) in enumerate(zip(self.permutation, self.signs, strict=True)):
            perm[i, j] = sign
        return self.scale * perm @ rot

    def from_env(self, env_action: Any) -> np.ndarray:
        """Simulator action(s) [..., 4] -> variant action(s) [..., action_dim] (float32)."""
        env_action = np.asarray(env_action, dtype=np.float64)
        if env_action.shape[-1] != ENV_ACTION_DIM:
            raise ValueError(
                f"a simulator action has {ENV_ACTION_DIM} values (xyz, gripper); got shape {env_action.shape}"
            )
        out = np.zeros(env_action.shape[:-1] + (self.action_dim,))
        out[..., list(self.xyz_indices)] = env_action[..., :3] @ self.matrix.T
        out[..., self.gripper_index] = self.gripper_scale * env_action[..., 3] + self.gripper_offset
        return out.astype(np.float32)

    def to_env(self, action: Any, clip: bool = True) -> np.ndarray:
        """Variant action(s) [..., >= action_dim] -> simulator action(s) [..., 4] (float32), clipped to [-1, 1].

        A policy may output more slots than the variant uses (a padded action space): they are ignored.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape[-1] < self.action_dim:
            raise ValueError(
                f"the action has {action.shape[-1]} values but this variant's action space has {self.action_dim}: "
                "was the policy trained on another variant's dataset?"
            )
        xyz = action[..., list(self.xyz_indices)] @ np.linalg.inv(self.matrix).T
        grip = (action[..., self.gripper_index] - self.gripper_offset) / self.gripper_scale
        out = np.concatenate([xyz, grip[..., None]], axis=-1)
        if clip:
            out = np.clip(out, -1.0, 1.0)
        return out.astype(np.float32)

    def names(self) -> list[str]:
        """Per-slot names for the dataset's ``action`` feature."""
        names = [f"pad_{i}" for i in range(self.action_dim)]
        for axis, i in zip("xyz", self.xyz_indices, strict=True):
            names[i] = f"d{axis}"
        names[self.gripper_index] = "gripper"
        return names


@dataclass(frozen=True)
class EmbodimentVariant:
    """One simulated robot: cameras, action space, control rate and domain id."""

    name: str
    domain_id: int
    # camera slot (the policy's ``observation.images.<slot>``) -> simulator camera name
    cameras: dict[str, str] = field(default_factory=lambda: {"main": "corner2", "wrist": "gripperPOV"})
    image_size: tuple[int, int] = (64, 64)  # (height, width) of every camera
    action: ActionTransform = field(default_factory=ActionTransform)
    action_repeat: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", dict(self.cameras))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if isinstance(self.action, dict):
            object.__setattr__(self, "action", ActionTransform(**self.action))
        if not self.name or "/" in self.name:
            raise ValueError(f"variant name {self.name!r} is invalid: use a short name without '/'")
        if not isinstance(self.domain_id, int) or self.domain_id < 0:
            raise ValueError(f"variant {self.name!r}: domain_id={self.domain_id!r} must be an integer >= 0")
        if not self.cameras:
            raise ValueError(
                f"variant {self.name!r} has no camera: give at least one slot, e.g. {{'main': 'corner2'}}"
            )
        if len(self.image_size) != 2 or not all(8 <= v <= 1024 for v in self.image_size):
            raise ValueError(
                f"variant {self.name!r}: image_size={self.image_size} must be (height, width) in [8, 1024]"
            )
        if any(v % 2 for v in self.image_size):
            raise ValueError(
                f"variant {self.name!r}: image_size={self.image_size} must be even (mp4 video frames)"
            )
        if not isinstance(self.action_repeat, int) or self.action_repeat < 1:
            raise ValueError(
                f"variant {self.name!r}: action_repeat={self.action_repeat!r} must be an integer >= 1"
            )

    @property
    def camera_keys(self) -> list[str]:
        return [f"observation.images.{slot}" for slot in self.cameras]

    @property
    def action_dim(self) -> int:
        return self.action.action_dim

    @property
    def fps(self) -> int:
        """The variant's control rate in Hz (one dataset frame per variant action)."""
        return max(1, round(1.0 / (ENV_DT * self.action_repeat)))

    def with_image_size(self, size: int | tuple[int, int] | None) -> EmbodimentVariant:
        if size is None:
            return self
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return dataclasses.replace(self, image_size=hw)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["action"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["action"].items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbodimentVariant:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown variant field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)


VARIANTS: dict[str, EmbodimentVariant] = {}


def register_variant(variant: EmbodimentVariant, overwrite: bool = False) -> EmbodimentVariant:
    if variant.name in VARIANTS and not overwrite:
        raise ValueError(f"variant {variant.name!r} is already registered: pass overwrite=True to replace it")
    VARIANTS[variant.name] = variant
    return variant


def get_variant(spec: str | dict | EmbodimentVariant) -> EmbodimentVariant:
    """A registered name, a path to a JSON file, a dict, or a variant."""
    if isinstance(spec, EmbodimentVariant):
        return spec
    if isinstance(spec, dict):
        return EmbodimentVariant.from_dict(spec)
    if spec in VARIANTS:
        return VARIANTS[spec]
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return EmbodimentVariant.from_dict(json.loads(path.read_text()))
    raise ValueError(
        f"unknown embodiment variant {spec!r}: registered variants are {sorted(VARIANTS)}; or pass a JSON file "
        "with the fields of xvla.sim.variants.EmbodimentVariant"
    )


def resolve_variants(spec: str | list) -> list[EmbodimentVariant]:
    """'all', a comma-separated list of names / JSON files, or a list of names, dicts or variants."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [i.strip() if isinstance(i, str) else i for i in items]
    items = [i for i in items if i != ""]
    if items == ["all"]:
        return list(VARIANTS.values())
    variants = [get_variant(i) for i in items]
    ids = [v.domain_id for v in variants]
    if len(set(ids)) != len(ids):
        raise ValueError(f"variants {[v.name for v in variants]} share domain ids {ids}: each needs its own")
    return variants


# Built-in variants. Domain ids start at 19, after the ids of the released base model (0-18), so a
# released checkpoint can be adapted to them without overwriting a pretrained domain.
for _variant in (
    EmbodimentVariant(
        name="sawyer",
        domain_id=19,
        cameras={"main": "corner2", "wrist": "gripperPOV"},
        description="Meta-World's Sawyer as is: 4-D xyz delta + gripper, 80 Hz",
    ),
    EmbodimentVariant(
        name="sawyer-rot90",
        domain_id=20,
        cameras={"main": "corner3", "wrist": "gripperPOV"},
        action=ActionTransform(rotation_z_deg=90.0),
        description="xyz frame rotated 90 degrees about the vertical axis; another corner camera",
    ),
    EmbodimentVariant(
        name="sawyer-joint7",
        domain_id=21,
        cameras={"main": "corner", "wrist": "behindGripper"},
        action=ActionTransform(
            permutation=(1, 0, 2),
            signs=(1.0, -1.0, 1.0),
            scale=0.5,
            gripper_scale=-0.5,
            gripper_offset=0.5,
            action_dim=7,
            xyz_indices=(0, 1, 2),
            gripper_index=6,
        ),
        action_repeat=2,
        description="x/y swapped and mirrored, half-size steps, gripper 1=open 0=closed in a 7-wide "
        "joint-like vector, 40 Hz",
    ),
    EmbodimentVariant(
        name="sawyer-topdown",
        domain_id=22,
        cameras={"main": "topview", "wrist": "gripperPOV"},
        action=ActionTransform(
            rotation_z_deg=180.0,
            scale=2.0,
            gripper_scale=-1.0,
            action_dim=8,
            xyz_indices=(2, 3, 4),
            gripper_index=7,
        ),
        description="top-down camera, xyz frame turned 180 degrees, double-size steps, inverted gripper, "
        "8-wide vector",
    ),
    # Hidden heterogeneity: these render exactly as `sawyer` (same cameras, image size and state) and differ
    # only in their action convention, so nothing in an observation tells them apart; only the domain id can.
    EmbodimentVariant(
        name="sawyer-hid-rot90",
        domain_id=23,
        action=ActionTransform(rotation_z_deg=90.0),
        description="renders as `sawyer`; xyz frame rotated 90 degrees about the vertical axis",
    ),
    EmbodimentVariant(
        name="sawyer-hid-mirror",
        domain_id=24,
        action=ActionTransform(signs=(-1.0, 1.0, -1.0)),
        description="renders as `sawyer`; x and z axes mirrored",
    ),
    EmbodimentVariant(
        name="sawyer-hid-scale",
        domain_id=25,
        action=ActionTransform(scale=0.5, gripper_scale=-1.0),
        description="renders as `sawyer`; half-size steps, inverted gripper",
    ),
):
    register_variant(_variant)
