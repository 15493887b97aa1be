"""``XVLAPlusPolicy``: an :class:`xvla.XVLAPolicy` behind LeRobot's ``PreTrainedPolicy`` interface.

Nothing of X-VLA is re-implemented here. Loading, saving, processing, the model, the action spaces and
the recipes all come from ``xvla``. The policy holds one ``xvla.XVLAPolicy`` (``self.xvla``), and
checkpoints are written in ``xvla``'s own format with LeRobot's config fields added:

- a folder LeRobot saved (``lerobot-train`` checkpoints) loads in ``xvla.XVLAPolicy.from_pretrained``;
- a folder ``xvla`` saved, a LeRobot ``xvla`` release or an official release loads here through
  ``XVLAPlusPolicy.from_pretrained(folder)`` or ``--policy.type=xvla_plus --policy.init_from=folder``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

import xvla
from xvla import checkpoints as ckpt
from xvla.config import EMPTY_CAMERA_PREFIX
from xvla.hub import resolve_checkpoint_dir
from xvla.processor import check_action_width
from xvla.train.config import PARAM_GROUPS, RECIPE_DEFAULTS
from xvla.train.config import OptimizerConfig as XVLAOptimizerConfig
from xvla.train.params import grouped_parameters

from .configuration_xvla_plus import TYPE_NAME, XVLAPlusConfig, xvla_field_names

STATE = "observation.state"
ACTION = "action"
IMAGE_PREFIX = "observation.images."
# Keyword arguments of LeRobot's loaders that mean nothing for a local X-VLA folder.
_HUB_KWARGS = (
    "force_download",
    "resume_download",
    "proxies",
    "token",
    "cache_dir",
    "local_files_only",
    "strict",
)


class XVLAPlusPolicy(PreTrainedPolicy):
    config_class = XVLAPlusConfig
    name = TYPE_NAME

    def __init__(
        self,
        config: XVLAPlusConfig,
        dataset_stats: Any = None,
        dataset_meta: Any = None,
        xvla_policy: xvla.XVLAPolicy | None = None,
        **kwargs: Any,
    ):
        super().__init__(config)
        if xvla_policy is None:
            xvla_policy = build_xvla_policy(config)
        check_features(xvla_policy.config, config)
        config.settle(xvla_policy.config)
        self.xvla = xvla_policy
        self.reset()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        pretrained_name_or_path: str | Path,
        *,
        config: XVLAPlusConfig | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> XVLAPlusPolicy:
        """Any X-VLA checkpoint folder or Hub id: one this plugin saved, or any format ``xvla`` reads."""
        for key in _HUB_KWARGS:
            kwargs.pop(key, None)
        folder = resolve_checkpoint_dir(pretrained_name_or_path, revision=revision)
        raw = ckpt.read_config_json(folder)
        if config is None:
            if raw.get("type") == TYPE_NAME:
                config = PreTrainedConfig.from_pretrained(
                    folder, cli_overrides=kwargs.pop("cli_overrides", [])
                )
            else:
                config = XVLAPlusConfig()
        saved, _ = ckpt.config_from_json(raw, folder)
        overrides = changed_fields(saved, config.xvla_overrides())
        policy = xvla.XVLAPolicy.from_pretrained(folder, device=config.device, **overrides)
        instance = cls(config, xvla_policy=policy, **kwargs)
        instance.to(config.device)
        instance.eval()
        return instance

    def _save_pretrained(self, save_directory: Path) -> None:
        """``xvla``'s checkpoint (config, weights, tokenizer), its config.json merged with LeRobot's fields."""
        save_directory = Path(save_directory)
        self.config.settle(self.xvla.config)
        self.config._save_pretrained(save_directory)
        lerobot_fields = json.loads((save_directory / ckpt.CONFIG_NAME).read_text())
        self.xvla.save_pretrained(save_directory, format="xvla")
        ours = json.loads((save_directory / ckpt.CONFIG_NAME).read_text())
        merged = {**lerobot_fields, **{k: v for k, v in ours.items() if k != "type"}}
        (save_directory / ckpt.CONFIG_NAME).write_text(json.dumps(merged, indent=4) + "\n")

    # ------------------------------------------------------------------ LeRobot's policy interface
    def reset(self) -> None:
        self.xvla.reset()

    def get_optim_params(self) -> list[dict[str, Any]]:
        """One AdamW group per X-VLA parameter group, at the recipe's LR scale (see schedule.py)."""
        opt = XVLAOptimizerConfig(**RECIPE_DEFAULTS[self.config.recipe]["optimizer"])
        groups = []
        for name, params in grouped_parameters(self.xvla.model).items():
            chosen = [p for _, p in params if p.requires_grad]
            if chosen:
                groups.append({"params": chosen, "name": name, "lr": opt.lr * opt.scale(name)})
        if not groups:
            raise ValueError(
                "nothing to train: every parameter is frozen (check --policy.freeze_* and train_* switches)"
            )
        assert {g["name"] for g in groups} <= set(PARAM_GROUPS)
        return groups

    def forward(self, batch: dict[str, Any], reduction: str = "mean") -> tuple[Tensor, dict[str, float]]:
        if reduction != "mean":
            raise ValueError(
                f"reduction={reduction!r} is not supported by xvla_plus: X-VLA's loss is a batch mean "
                "(turn off per-sample weighting such as --use_rabc)"
            )
        self.check_cameras(batch)
        return self.xvla.forward(batch)

    @torch.no_grad()
    def predict_action_chunk(
        self, batch: dict[str, Any], noise: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        """``xvla.XVLAPolicy.predict_action_chunk`` (``prefix``/``prefix_weights`` for real-time chunking)."""
        self.check_cameras(batch)
        return self.xvla.predict_action_chunk(batch, noise=noise, **kwargs)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], noise: Tensor | None = None) -> Tensor:
        self.check_cameras(batch)
        return self.xvla.select_action(batch, noise=noise)

    def check_cameras(self, batch: dict[str, Any]) -> None:
        keys = self.xvla.config.image_keys
        missing = [k for k in keys or [] if k not in batch]
        if missing:
            present = sorted(k for k in batch if k.startswith(IMAGE_PREFIX))
            example = json.dumps({present[0] if present else "observation.images.<yours>": missing[0]})
            raise ValueError(
                f"camera feature '{missing[0]}' is missing: this policy reads {keys} and the batch has {present}. "
                f"Map yours with --rename_map='{example}', or choose cameras with --policy.image_keys"
            )


# ---------------------------------------------------------------------------------------------- building


def build_xvla_policy(config: XVLAPlusConfig) -> xvla.XVLAPolicy:
    """From ``init_from`` (weights and architecture) or from scratch, with the set fields overriding."""
    overrides = config.xvla_overrides()
    if config.init_from:
        folder = resolve_checkpoint_dir(config.init_from)
        saved, _ = ckpt.config_from_json(ckpt.read_config_json(folder), folder)
        changed = changed_fields(saved, overrides)
        changed.update(dataset_fields(saved.replace(**changed), config))
        return xvla.XVLAPolicy.from_pretrained(folder, device=config.device, **changed)
    base = xvla.XVLAConfig(**overrides)
    return xvla.XVLAPolicy(base.replace(**dataset_fields(base, config))).to(config.device)


def dataset_fields(xvla_config: xvla.XVLAConfig, config: XVLAPlusConfig) -> dict[str, Any]:
    """What the dataset (or env) features decide when the checkpoint and the flags leave it open."""
    out: dict[str, Any] = {}
    cameras = feature_cameras(config)
    if xvla_config.image_keys is None and cameras:
        out["image_keys"] = cameras
    action = (config.output_features or {}).get(ACTION)
    if (
        action is not None
        and str(xvla_config.action_mode).lower() == "auto"
        and xvla_config.real_action_dim is None
    ):
        out["real_action_dim"] = int(action.shape[-1])
    return out


def feature_cameras(config: XVLAPlusConfig) -> list[str]:
    return [
        k
        for k, f in (config.input_features or {}).items()
        if f.type is FeatureType.VISUAL and not k.startswith(EMPTY_CAMERA_PREFIX)
    ]


def check_features(xvla_config: xvla.XVLAConfig, config: XVLAPlusConfig) -> None:
    """The dataset's (or env's) state and action widths against the policy's: one line naming the fix."""
    inputs, outputs = config.input_features or {}, config.output_features or {}
    if not inputs and not outputs:
        return  # built from Python with no features: nothing to compare
    state = inputs.get(STATE)
    if xvla_config.use_proprio:
        if state is None:
            raise ValueError(
                f"the dataset has no '{STATE}' feature but this policy reads the robot state: "
                "set --policy.use_proprio=false, or add the state feature"
            )
        width = int(state.shape[-1])
        if width > xvla_config.max_state_dim:
            raise ValueError(
                f"dataset feature '{STATE}' has {width} values but this policy takes at most "
                f"max_state_dim={xvla_config.max_state_dim}: set --policy.max_state_dim={width} (a model trained "
                "from scratch) or keep the first state values only"
            )
    action = outputs.get(ACTION)
    if action is not None:
        width = int(action.shape[-1])
        check_action_width(xvla_config, width, where=f"dataset feature '{ACTION}'")
        real = xvla_config.real_action_dim
        if str(xvla_config.action_mode).lower() == "auto" and real is not None and real != width:
            raise ValueError(
                f"dataset feature '{ACTION}' has {width} values but this policy's action_mode 'auto' predicts "
                f"real_action_dim={real}: set --policy.real_action_dim={width}"
            )


def changed_fields(saved: xvla.XVLAConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` that differ from the checkpoint's (compared in config.json form)."""
    reference = saved.to_dict()
    out = {}
    for name, value in values.items():
        if name not in xvla_field_names():
            continue
        if _as_json(value) != reference.get(name):
            out[name] = value
    return out


def _as_json(value: Any) -> Any:
    return (
        json.loads(json.dumps(value, default=list))
        if not isinstance(value, dict)
        else {str(k): _as_json(v) for k, v in value.items()}
    )
