"""LeRobot's X-VLA checkpoints: config.json marked ``"type": "xvla"``, weights under ``model.``, Florence-2 in
the remote-code layout (older releases) or the native one.

The camera names and sizes come from ``input_features``, the action width from ``output_features``, and
the domain id from the saved pre-processor pipeline."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from ..config import EMPTY_CAMERA_PREFIX, XVLAConfig, settle_image_size
from .florence import florence_config_to_native, florence_config_to_remote
from .identity import SIDE_FIELDS

logger = logging.getLogger(__name__)


def _features_to_image_keys(input_features: dict[str, Any] | None) -> list[str] | None:
    if not input_features:
        return None
    keys = [
        k
        for k, f in input_features.items()
        if (f or {}).get("type") == "VISUAL" and not k.startswith(EMPTY_CAMERA_PREFIX)
    ]
    return keys or None


def _lerobot_domain_id(folder: Path | None) -> int | None:
    """LeRobot keeps the domain id in its saved pre-processor pipeline, not in config.json."""
    if folder is None:
        return None
    for path in sorted(Path(folder).glob("*preprocessor*.json")):
        try:
            steps = json.loads(path.read_text()).get("steps", [])
        except (json.JSONDecodeError, AttributeError):
            continue
        for step in steps:
            if step.get("registry_name") == "xvla_add_domain_id":
                value = (step.get("config") or {}).get("domain_id")
                if value is not None:
                    return int(value)
    return None


def config_from_lerobot(data: dict[str, Any], folder: Path | None = None) -> XVLAConfig:
    names = set(XVLAConfig.__dataclass_fields__)
    kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in names}
    kwargs["florence_config"] = florence_config_to_native(data.get("florence_config") or {})
    kwargs["image_keys"] = _features_to_image_keys(data.get("input_features"))
    if kwargs.get("image_size") is None and not kwargs.get("resize_imgs_with_padding"):
        kwargs["image_size"] = _features_image_size(data.get("input_features"), kwargs["image_keys"])
    action = (data.get("output_features") or {}).get("action")
    if action and action.get("shape"):
        kwargs["real_action_dim"] = int(action["shape"][-1])
    if kwargs.get("image_keys") and kwargs.get("num_image_views") is None:
        kwargs["num_image_views"] = len(kwargs["image_keys"]) + int(data.get("empty_cameras", 0) or 0)
    domain = _lerobot_domain_id(folder)
    if domain is not None:
        kwargs["domain_id"] = domain
    return XVLAConfig(**kwargs)


def _features_image_size(features: dict[str, Any] | None, keys: list[str] | None) -> tuple[int, int] | None:
    """LeRobot declares the frame size per camera in ``input_features`` ([3, H, W]); the first camera's wins."""
    shapes = [
        tuple(features[k]["shape"][-2:]) for k in keys or [] if len(features[k].get("shape") or []) == 3
    ]
    if not shapes:
        return None
    if len(set(shapes)) > 1:
        logger.warning(
            "input_features declare cameras of different sizes %s: all frames are resized to %s",
            sorted(set(shapes)),
            shapes[0],
        )
    return shapes[0]


def config_to_lerobot(config: XVLAConfig) -> dict[str, Any]:
    data = config.to_dict()
    for key in ("format", "image_keys", "image_size", "real_action_dim") + SIDE_FIELDS["lerobot"]:
        data.pop(key, None)
    data["type"] = "xvla"
    data["florence_config"] = florence_config_to_remote(config.florence_config)
    image_keys = config.image_keys or ["observation.images.image"]
    features: dict[str, Any] = {}
    size = list(settle_image_size(config, warn=False))
    for key in image_keys:
        features[key] = {"type": "VISUAL", "shape": [3, *size]}
    for i in range(config.empty_cameras):
        features[f"{EMPTY_CAMERA_PREFIX}{i}"] = {"type": "VISUAL", "shape": [3, *size]}
    if config.use_proprio:
        features["observation.state"] = {"type": "STATE", "shape": [config.max_state_dim]}
    data["input_features"] = features
    real = config.real_action_dim or config.max_action_dim
    data["output_features"] = {"action": {"type": "ACTION", "shape": [real]}}
    data["normalization_mapping"] = {"VISUAL": "IDENTITY", "STATE": "IDENTITY", "ACTION": "IDENTITY"}
    data["device"] = "cpu"
    return data
