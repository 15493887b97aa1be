"""The official X-VLA release (``2toINF/X-VLA-*``): config.json marked ``"model_type": "xvla"``, Florence-2 in
Microsoft's remote-code layout, the image size in preprocessor_config.json, and a proprio as wide as the
action space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import DEFAULT_IMAGE_SIZE, XVLAConfig, settle_image_size
from ..utils import write_json
from .florence import florence_config_to_native, florence_config_to_remote

PREPROCESSOR_NAME = "preprocessor_config.json"


def _read_preprocessor_size(folder: Path | None) -> tuple[int, int] | None:
    if folder is None or not (Path(folder) / PREPROCESSOR_NAME).exists():
        return None
    data = json.loads((Path(folder) / PREPROCESSOR_NAME).read_text())
    size = data.get("size") or data.get("crop_size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    if isinstance(size, int):
        return size, size
    return None


def config_from_official(data: dict[str, Any], folder: Path | None = None) -> XVLAConfig:
    from ..actions import build_action_space

    mode = str(data.get("action_mode", "ee6d")).lower()
    max_action_dim = int(data.get("max_action_dim", 20))
    real_action_dim = data.get("real_action_dim")
    if mode == "auto":
        space = build_action_space(mode, real_dim=real_action_dim, max_dim=max_action_dim)
    else:
        space = build_action_space(mode)
    chunk = int(data.get("num_actions", 30))
    return XVLAConfig(
        chunk_size=chunk,
        n_action_steps=chunk,
        hidden_size=int(data.get("hidden_size", 1024)),
        depth=int(data.get("depth", 24)),
        num_heads=int(data.get("num_heads", 16)),
        mlp_ratio=float(data.get("mlp_ratio", 4.0)),
        num_domains=int(data.get("num_domains", 30)),
        len_soft_prompts=int(data.get("len_soft_prompts", 32)),
        dim_time=int(data.get("dim_time", 32)),
        max_len_seq=int(data.get("max_len_seq", 512)),
        use_hetero_proj=bool(data.get("use_hetero_proj", False)),
        action_mode=mode,
        use_proprio=bool(data.get("use_proprio", True)),
        # The official model feeds a proprio as wide as the action space.
        max_state_dim=int(getattr(space, "dim_proprio", space.dim_action)),
        max_action_dim=max_action_dim,
        real_action_dim=int(real_action_dim) if (mode == "auto" and real_action_dim) else None,
        auto_loss_weight=100.0,
        num_image_views=3,
        image_size=_read_preprocessor_size(folder) or DEFAULT_IMAGE_SIZE,
        tokenizer_max_length=50,
        florence_config=florence_config_to_native(data.get("florence_config") or {}),
    )


def config_to_official(config: XVLAConfig) -> dict[str, Any]:
    from ..actions import build_action_space_for  # torch: only when converting

    dim_action = build_action_space_for(config).dim_action
    if config.use_proprio and config.max_state_dim != dim_action:
        raise ValueError(
            f"cannot export to the official format: it feeds a proprio as wide as the model action "
            f"({dim_action}) but this model has max_state_dim={config.max_state_dim}. Convert with "
            "--to lerobot or --to xvla instead."
        )
    return {
        "model_type": "xvla",
        "architectures": ["XVLA"],
        "action_mode": config.action_mode,
        "use_proprio": config.use_proprio,
        "num_actions": config.chunk_size,
        "hidden_size": config.hidden_size,
        "depth": config.depth,
        "num_heads": config.num_heads,
        "mlp_ratio": config.mlp_ratio,
        "num_domains": config.num_domains,
        "len_soft_prompts": config.len_soft_prompts,
        "dim_time": config.dim_time,
        "max_len_seq": config.max_len_seq,
        "use_hetero_proj": config.use_hetero_proj,
        "soft_prompt_length": config.len_soft_prompts,
        "max_action_dim": config.max_action_dim,
        "real_action_dim": config.real_action_dim or config.max_action_dim,
        "florence_config": florence_config_to_remote(config.florence_config),
    }


def write_preprocessor_config(config: XVLAConfig, directory: Path, source_dir: Path | None) -> None:
    """The official format reads its image size from preprocessor_config.json (bicubic resize)."""
    height, width = settle_image_size(config, warn=False)
    data: dict[str, Any] = {}
    source = Path(source_dir) / PREPROCESSOR_NAME if source_dir is not None else None
    if source is not None and source.is_file():
        data = json.loads(source.read_text())
    data.update(
        {
            "do_resize": True,
            "size": {"height": height, "width": width},
            "crop_size": {"height": height, "width": width},
            "resample": 3,
            "do_normalize": True,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        }
    )
    write_json(directory / PREPROCESSOR_NAME, data)
