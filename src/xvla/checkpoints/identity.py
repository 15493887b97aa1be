"""A checkpoint's identity: the config fields every command must agree on, whatever the format.

Our config.json holds all of them; the LeRobot and official config.json have no place for some, which
go in ``xvla.json`` beside it and are laid over the translated config on load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import XVLAConfig

IDENTITY_NAME = "xvla.json"
IDENTITY_FIELDS = (
    "domains",
    "domain_id",
    "image_keys",
    "image_size",
    "resize_imgs_with_padding",
    "empty_cameras",
    "num_image_views",
    "use_proprio",
    "max_state_dim",
    "action_mode",
    "real_action_dim",
    "max_action_dim",
    "chunk_size",
    "n_action_steps",
    "num_denoising_steps",
    "tokenizer_name",
    "tokenizer_max_length",
    "auto_loss_weight",
)
SIDE_FIELDS = {
    "xvla": (),
    "lerobot": ("domains", "domain_id", "auto_loss_weight"),
    "official": tuple(
        f for f in IDENTITY_FIELDS if f not in ("action_mode", "use_proprio", "max_action_dim", "chunk_size")
    ),
}


def checkpoint_identity(config: XVLAConfig, fmt: str) -> dict[str, Any]:
    """The identity fields that the config.json of format ``fmt`` cannot hold (written to xvla.json)."""
    data = config.to_dict()
    return {k: data[k] for k in SIDE_FIELDS[fmt]}


def apply_identity(config: XVLAConfig, fmt: str, folder: Path | None) -> XVLAConfig:
    """Overlay xvla.json (written by this library beside LeRobot and official checkpoints) on ``config``."""
    path = Path(folder) / IDENTITY_NAME if folder is not None else None
    if fmt == "xvla" or path is None or not path.is_file():
        return config
    try:
        side = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); restore it or delete it") from exc
    fields = {k: v for k, v in side.items() if k in SIDE_FIELDS[fmt]}
    return config.replace(**fields) if fields else config
