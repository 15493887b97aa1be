"""Checkpoint formats: detection, config translation, weight-key remapping and export.

Three layouts are read (and written back by ``xvla convert``):

========== ============================ ======================= ===========================
format     config.json marker           weight keys             Florence-2 layout
========== ============================ ======================= ===========================
xvla       ``"format": "xvla"``         ``vlm.*  transformer.*``  native transformers
lerobot    ``"type": "xvla"``           ``model.vlm.* ...``       remote-code (older) or native
official   ``"model_type": "xvla"``     ``vlm.*  transformer.*``  remote-code (Microsoft)
========== ============================ ======================= ===========================

Weights are read with safetensors only. Our model uses the native layout internally; remote-code
keys are renamed (and the image projection transposed) on load, and back on export.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DEFAULT_IMAGE_SIZE, EMPTY_CAMERA_PREFIX, XVLAConfig, settle_image_size
from .utils import atomic_write, write_json

if TYPE_CHECKING:
    import torch

# torch, safetensors.torch and the processor load where tensors are read or written: `xvla info` reads
# configs and verifies files without them.

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMATS = ("xvla", "lerobot", "official")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json",
)  # fmt: skip
logger = logging.getLogger(__name__)
IDENTITY_NAME = "xvla.json"
# A checkpoint's identity: what every command must agree on. Our config.json holds all of it; for the
# LeRobot and official formats, the fields their config.json has no place for go in xvla.json beside it.
IDENTITY_FIELDS = (
    "domains", "domain_id", "image_keys", "image_size", "resize_imgs_with_padding", "empty_cameras",
    "num_image_views", "use_proprio", "max_state_dim", "action_mode", "real_action_dim", "max_action_dim",
    "chunk_size", "n_action_steps", "num_denoising_steps", "tokenizer_name", "tokenizer_max_length",
    "auto_loss_weight",
)  # fmt: skip
SIDE_FIELDS = {
    "xvla": (),
    "lerobot": ("domains", "domain_id", "auto_loss_weight"),
    "official": tuple(
        f for f in IDENTITY_FIELDS if f not in ("action_mode", "use_proprio", "max_action_dim", "chunk_size")
    ),
}
PREPROCESSOR_NAME = "preprocessor_config.json"

# ------------------------------------------------------------------------------------------- detection


def read_config_json(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: an X-VLA checkpoint folder needs config.json and {WEIGHTS_NAME}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt or incomplete") from exc


def detect_format(config: dict[str, Any]) -> str:
    if config.get("format") == "xvla":
        return "xvla"
    if config.get("model_type") == "xvla":
        return "official"
    if config.get("type") == "xvla":
        return "lerobot"
    raise ValueError(
        "config.json is not an X-VLA checkpoint config: expected 'format': 'xvla' (this library), "
        "'type': 'xvla' (LeRobot) or 'model_type': 'xvla' (official release)"
    )


# ------------------------------------------------------------------------------------------- florence config


def is_remote_florence_config(florence: dict[str, Any]) -> bool:
    vision = florence.get("vision_config") or {}
    return "dim_embed" in vision or vision.get("model_type") == "davit" or "image_pos_embed" in vision


def florence_config_to_native(florence: dict[str, Any]) -> dict[str, Any]:
    """Microsoft remote-code Florence-2 config (official / older LeRobot) -> native transformers form."""
    if not is_remote_florence_config(florence):
        out = copy.deepcopy(florence)
        out.setdefault("vision_config", {})
        out.setdefault("text_config", {})
        return {"vision_config": out["vision_config"], "text_config": out["text_config"]}
    vision = dict(florence.get("vision_config") or {})
    text = dict(florence.get("text_config") or {})
    # Defaults of the remote-code Florence2VisionConfig (Florence-2-large) where the file leaves them out.
    native_vision = {
        "embed_dim": vision.get("dim_embed", [256, 512, 1024, 2048]),
        "num_heads": vision.get("num_heads", [8, 16, 32, 64]),
        "num_groups": vision.get("num_groups", [8, 16, 32, 64]),
        "depths": vision.get("depths", [1, 1, 9, 1]),
        "patch_size": vision.get("patch_size", [7, 3, 3, 3]),
        "patch_stride": vision.get("patch_stride", [4, 2, 2, 2]),
        "patch_padding": vision.get("patch_padding", [3, 1, 1, 1]),
        "patch_prenorm": vision.get("patch_prenorm", [False, True, True, True]),
        "window_size": vision.get("window_size", 12),
        "projection_dim": vision.get("projection_dim", florence.get("projection_dim", 1024)),
        "max_position_embeddings": (vision.get("image_pos_embed") or {}).get("max_pos_embeddings", 50),
        "max_temporal_embeddings": (vision.get("visual_temporal_embedding") or {}).get("max_temporal_embeddings", 100),
        "drop_path_rate": vision.get("drop_path_rate", 0.1),
    }
    sources = vision.get("image_feature_source", ["spatial_avg_pool", "temporal_avg_pool"])
    if list(sources) != ["spatial_avg_pool", "temporal_avg_pool"]:
        raise ValueError(
            f"florence_config.vision_config.image_feature_source={sources} is not supported: the released "
            "checkpoints (and transformers' Florence-2) use ['spatial_avg_pool', 'temporal_avg_pool']"
        )
    # Defaults of the remote-code Florence2LanguageConfig where the file leaves them out.
    text_defaults = {
        "vocab_size": florence.get("vocab_size", 51289), "max_position_embeddings": 1024, "encoder_layers": 12,
        "encoder_ffn_dim": 4096, "encoder_attention_heads": 16, "decoder_layers": 12, "decoder_ffn_dim": 4096,
        "decoder_attention_heads": 16, "activation_function": "gelu", "d_model": 1024, "dropout": 0.1,
        "attention_dropout": 0.0, "activation_dropout": 0.0, "scale_embedding": False, "pad_token_id": 1,
        "bos_token_id": 0, "eos_token_id": 2,
    }  # fmt: skip
    keep = set(text_defaults) | {"init_std", "encoder_layerdrop", "decoder_layerdrop", "decoder_start_token_id"}
    native_text = {**text_defaults, **{k: v for k, v in text.items() if k in keep}}
    return {"vision_config": native_vision, "text_config": native_text}


def florence_config_to_remote(florence: dict[str, Any]) -> dict[str, Any]:
    """Native form -> Microsoft remote-code form (what LeRobot 0.4.x and the official code read)."""
    v, t = florence["vision_config"], florence["text_config"]
    proj = v.get("projection_dim", 1024)
    vision = {
        "model_type": "davit",
        "drop_path_rate": v.get("drop_path_rate", 0.1),
        "patch_size": list(v.get("patch_size", [7, 3, 3, 3])),
        "patch_stride": list(v.get("patch_stride", [4, 2, 2, 2])),
        "patch_padding": list(v.get("patch_padding", [3, 1, 1, 1])),
        "patch_prenorm": list(v.get("patch_prenorm", [False, True, True, True])),
        "enable_checkpoint": False,
        "dim_embed": list(v.get("embed_dim", [256, 512, 1024, 2048])),
        "num_heads": list(v.get("num_heads", [8, 16, 32, 64])),
        "num_groups": list(v.get("num_groups", [8, 16, 32, 64])),
        "depths": list(v.get("depths", [1, 1, 9, 1])),
        "window_size": v.get("window_size", 12),
        "projection_dim": proj,
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": v.get("max_temporal_embeddings", 100)},
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": v.get("max_position_embeddings", 50)},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    }
    text = {"model_type": "florence2_language", **t}
    return {
        "model_type": "florence2",
        "bos_token_id": t.get("bos_token_id", 0),
        "eos_token_id": t.get("eos_token_id", 2),
        "pad_token_id": t.get("pad_token_id", 1),
        "vocab_size": t.get("vocab_size", 51289),
        "projection_dim": proj,
        "ignore_index": -100,
        "vision_config": vision,
        "text_config": text,
    }


# ------------------------------------------------------------------------------------------- config translation


def _features_to_image_keys(input_features: dict[str, Any] | None) -> list[str] | None:
    if not input_features:
        return None
    keys = [
        k for k, f in input_features.items()
        if (f or {}).get("type") == "VISUAL" and not k.startswith(EMPTY_CAMERA_PREFIX)
    ]  # fmt: skip
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
    shapes = [tuple(features[k]["shape"][-2:]) for k in keys or [] if len(features[k].get("shape") or []) == 3]
    if not shapes:
        return None
    if len(set(shapes)) > 1:
        logger.warning("input_features declare cameras of different sizes %s: all frames are resized to %s",
                       sorted(set(shapes)), shapes[0])  # fmt: skip
    return shapes[0]


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


def _read_preprocessor_size(folder: Path | None) -> tuple[int, int] | None:
    if folder is None or not (Path(folder) / "preprocessor_config.json").exists():
        return None
    data = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    size = data.get("size") or data.get("crop_size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    if isinstance(size, int):
        return size, size
    return None


def config_from_official(data: dict[str, Any], folder: Path | None = None) -> XVLAConfig:
    from .actions import build_action_space

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


def config_from_json(data: dict[str, Any], folder: Path | None = None) -> tuple[XVLAConfig, str]:
    fmt = detect_format(data)
    if fmt == "xvla":
        config = XVLAConfig.from_dict(data)
    elif fmt == "lerobot":
        config = config_from_lerobot(data, folder)
    else:
        config = config_from_official(data, folder)
    config = apply_identity(config, fmt, folder)
    if config.domains is None and folder is not None:
        config = config.replace(domains=_legacy_domains(Path(folder)) or None)
    return config, fmt


def _legacy_domains(folder: Path) -> dict[int, str]:
    """Checkpoints written before domains moved into the config kept them in domains.json."""
    path = folder / "domains.json"
    if not path.is_file():
        return {}
    return {int(k): str(v) for k, v in json.loads(path.read_text()).get("domains", {}).items()}


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


def config_to_official(config: XVLAConfig) -> dict[str, Any]:
    from .actions import build_action_space_for  # torch: only when converting

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


# ------------------------------------------------------------------------------------------- weight keys

_REMOTE_TO_NATIVE_RULES = [
    (re.compile(r"^vlm\.vision_tower\.convs\.(\d+)\.proj\."), r"vlm.vision_tower.convs.\1.conv."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)conv([12])\.fn\.dw\."), r"\1conv\2."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(?:window|channel)_attn\.norm\."), r"\1norm1."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(window|channel)_attn\.fn\."), r"\1\2_attn."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\.norm\."), r"\1norm2."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\.fn\.net\."), r"\1ffn."),
    (re.compile(r"^vlm\.image_proj_norm\."), "vlm.multi_modal_projector.image_proj_norm."),
    (re.compile(r"^vlm\.image_pos_embed\."), "vlm.multi_modal_projector.image_position_embed."),
    (re.compile(r"^vlm\.visual_temporal_embed\."), "vlm.multi_modal_projector.visual_temporal_embed."),
    (re.compile(r"^vlm\.language_model\.model\."), "vlm.language_model."),
]
_NATIVE_TO_REMOTE_RULES = [
    (re.compile(r"^vlm\.vision_tower\.convs\.(\d+)\.conv\."), r"vlm.vision_tower.convs.\1.proj."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)conv([12])\."), r"\1conv\2.fn.dw."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.spatial_block\.)norm1\."), r"\1window_attn.norm."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.channel_block\.)norm1\."), r"\1channel_attn.norm."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(window|channel)_attn\."), r"\1\2_attn.fn."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)norm2\."), r"\1ffn.norm."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\."), r"\1ffn.fn.net."),
    (re.compile(r"^vlm\.multi_modal_projector\.image_proj_norm\."), "vlm.image_proj_norm."),
    (re.compile(r"^vlm\.multi_modal_projector\.image_position_embed\."), "vlm.image_pos_embed."),
    (re.compile(r"^vlm\.multi_modal_projector\.visual_temporal_embed\."), "vlm.visual_temporal_embed."),
    (re.compile(r"^vlm\.language_model\."), "vlm.language_model.model."),
]
REMOTE_IMAGE_PROJECTION = "vlm.image_projection"
NATIVE_IMAGE_PROJECTION = "vlm.multi_modal_projector.image_projection.weight"
SHARED_KEY = "vlm.language_model.shared.weight"
ENCODER_EMBED_KEY = "vlm.language_model.encoder.embed_tokens.weight"


def _apply_rules(key: str, rules) -> str:
    for pattern, repl in rules:
        new, count = pattern.subn(repl, key)
        if count:
            return new
    return key


def is_remote_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    return REMOTE_IMAGE_PROJECTION in state_dict or any(
        k.startswith("vlm.language_model.model.") or ".fn." in k for k in state_dict if k.startswith("vlm.")
    )


def remote_to_native(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == "vlm.language_model.final_logits_bias":
            continue  # belongs to the LM head, which X-VLA never uses
        if key == REMOTE_IMAGE_PROJECTION:
            out[NATIVE_IMAGE_PROJECTION] = value.t().contiguous()  # x @ W  ->  Linear(x) = x @ W.T
            continue
        out[_apply_rules(key, _REMOTE_TO_NATIVE_RULES)] = value
    return out


def native_to_remote(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key == NATIVE_IMAGE_PROJECTION:
            out[REMOTE_IMAGE_PROJECTION] = value.t().contiguous()
            continue
        out[_apply_rules(key, _NATIVE_TO_REMOTE_RULES)] = value
    return out


def restore_tied_embeddings(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The token embedding is shared by ``shared`` and ``encoder.embed_tokens``; files may keep only one."""
    if SHARED_KEY not in state_dict and ENCODER_EMBED_KEY in state_dict:
        state_dict[SHARED_KEY] = state_dict[ENCODER_EMBED_KEY]
    if ENCODER_EMBED_KEY not in state_dict and SHARED_KEY in state_dict:
        state_dict[ENCODER_EMBED_KEY] = state_dict[SHARED_KEY]
    return state_dict


# Parts of Florence-2 that X-VLA never runs (text decoder, LM head); some exports still carry them.
UNUSED_KEY_PATTERN = re.compile(
    r"^vlm\.(?:language_model\.(?:model\.)?decoder\.|language_model\.lm_head\.|lm_head\.|"
    r"language_model\.final_logits_bias$|language_model\.model\.final_logits_bias$)"
)


def to_internal_state_dict(state_dict: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Any supported file layout -> our module's keys (native Florence, no ``model.`` prefix)."""
    if fmt == "lerobot" or all(k.startswith("model.") for k in state_dict):
        state_dict = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
    state_dict = {k: v for k, v in state_dict.items() if not UNUSED_KEY_PATTERN.match(k)}
    if is_remote_layout(state_dict):
        state_dict = remote_to_native(state_dict)
    return restore_tied_embeddings(dict(state_dict))


def from_internal_state_dict(state_dict: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Our keys -> the file layout of ``fmt`` (LeRobot and official use the remote-code Florence layout)."""
    state_dict = {k: v for k, v in state_dict.items() if k != ENCODER_EMBED_KEY}  # one alias is enough
    if fmt in ("lerobot", "official"):
        state_dict = native_to_remote(state_dict)
    if fmt == "lerobot":
        state_dict = {f"model.{k}": v for k, v in state_dict.items()}
    return state_dict


# ------------------------------------------------------------------------------------------- files


def weights_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors file(s): ``model.safetensors`` or its shards."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if path.exists():
        return [path]
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    if shards:
        return shards
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise FileNotFoundError(
            f"{folder} has only pickle weights (.bin/.pt); xvla reads safetensors only. Convert them with "
            "safetensors.torch.save_file in a trusted environment."
        )
    raise FileNotFoundError(f"{path} not found: the checkpoint folder must contain {WEIGHTS_NAME}")


def load_weights_file(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in weights_files(folder):
        out.update(_read_safetensors(path))
    return out


def verify_weights(folder: Path) -> dict[str, Any]:
    """Check each weights file's header and sizes without reading the tensors (what ``xvla info`` reports).

    safetensors validates on open that every tensor's byte range matches its dtype and shape and that the
    ranges cover the file exactly, so a truncated or padded download is caught here, not at load time."""
    from safetensors import safe_open

    files, tensors = [], 0
    for path in weights_files(folder):
        try:
            with safe_open(str(path), framework="np") as f:
                tensors += len(list(f.keys()))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged files
            raise ValueError(_damaged(path, exc)) from exc
        files.append({"name": path.name, "bytes": path.stat().st_size})
    return {"files": files, "tensors": tensors, "status": "ok (header and sizes verified)"}


def _damaged(path: Path, exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (f"{path} is damaged: truncated or corrupt ({reason}, {path.stat().st_size} bytes): download or copy "
            "the checkpoint again")  # fmt: skip


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(_damaged(path, exc)) from exc


def save_weights_file(state_dict: dict[str, torch.Tensor], folder: Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # safetensors refuses shared storage; each tensor gets its own copy.
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.data_ptr()
        if ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    from safetensors.torch import save_file

    atomic_write(Path(folder) / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))


def write_config(data: dict[str, Any], folder: Path) -> None:
    write_json(Path(folder) / CONFIG_NAME, data)


def export_config(config: XVLAConfig, fmt: str) -> dict[str, Any]:
    if fmt == "xvla":
        return config.to_dict()
    if fmt == "lerobot":
        return config_to_lerobot(config)
    if fmt == "official":
        return config_to_official(config)
    raise ValueError(f"unknown checkpoint format '{fmt}'; choose one of {FORMATS}")


def write_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: XVLAConfig,
    fmt: str = "xvla",
    tokenizer: Any = None,
    source_dir: Path | None = None,
    producer: str = "xvla",
) -> Path:
    """The one checkpoint writer: weights, config.json, the identity side file, tokenizer and image size.

    Used by ``XVLAPolicy.save_pretrained``, ``xvla convert`` and the trainer. The tokenizer is saved
    from ``tokenizer`` when given, else its files are copied from ``source_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format '{fmt}' is unknown; choose one of {FORMATS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = from_internal_state_dict(state_dict, fmt)
    save_weights_file(weights, directory, metadata={"format": fmt, "producer": producer})
    write_config(export_config(config, fmt), directory)
    if SIDE_FIELDS[fmt]:
        write_json(directory / IDENTITY_NAME, checkpoint_identity(config, fmt))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    elif source_dir is not None and Path(source_dir).resolve() != directory.resolve():
        for name in TOKENIZER_FILES:
            if (Path(source_dir) / name).exists():
                shutil.copy2(Path(source_dir) / name, directory / name)
    if fmt == "official":
        write_preprocessor_config(config, directory, source_dir)
    return directory


def write_preprocessor_config(config: XVLAConfig, directory: Path, source_dir: Path | None) -> None:
    """The official format reads its image size from preprocessor_config.json (bicubic resize)."""
    height, width = settle_image_size(config, warn=False)
    data: dict[str, Any] = {}
    source = Path(source_dir) / PREPROCESSOR_NAME if source_dir is not None else None
    if source is not None and source.is_file():
        data = json.loads(source.read_text())
    data.update({
        "do_resize": True, "size": {"height": height, "width": width}, "crop_size": {"height": height, "width": width},
        "resample": 3, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    })  # fmt: skip
    write_json(directory / PREPROCESSOR_NAME, data)
