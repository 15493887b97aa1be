"""Florence-2 in the two layouts X-VLA checkpoints use: the native transformers one (ours) and Microsoft's
remote-code one (the official release and LeRobot). Config translation both ways, and the weight-key
renaming both ways (the image projection is stored transposed in the remote-code layout)."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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
        "max_temporal_embeddings": (vision.get("visual_temporal_embedding") or {}).get(
            "max_temporal_embeddings", 100
        ),
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
        "vocab_size": florence.get("vocab_size", 51289),
        "max_position_embeddings": 1024,
        "encoder_layers": 12,
        "encoder_ffn_dim": 4096,
        "encoder_attention_heads": 16,
        "decoder_layers": 12,
        "decoder_ffn_dim": 4096,
        "decoder_attention_heads": 16,
        "activation_function": "gelu",
        "d_model": 1024,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "scale_embedding": False,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    keep = set(text_defaults) | {
        "init_std",
        "encoder_layerdrop",
        "decoder_layerdrop",
        "decoder_start_token_id",
    }
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
        "visual_temporal_embedding": {
            "type": "COSINE",
            "max_temporal_embeddings": v.get("max_temporal_embeddings", 100),
        },
        "image_pos_embed": {
            "type": "learned_abs_2d",
            "max_pos_embeddings": v.get("max_position_embeddings", 50),
        },
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


_REMOTE_TO_NATIVE_RULES = [
    (re.compile(r"^vlm\.vision_tower\.convs\.(\d+)\.proj\."), r"vlm.vision_tower.convs.\1.conv."),
    (
        re.compile(
            r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)conv([12])\.fn\.dw\."
        ),
        r"\1conv\2.",
    ),
    (
        re.compile(
            r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(?:window|channel)_attn\.norm\."
        ),
        r"\1norm1.",
    ),
    (
        re.compile(
            r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(window|channel)_attn\.fn\."
        ),
        r"\1\2_attn.",
    ),
    (
        re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\.norm\."),
        r"\1norm2.",
    ),
    (
        re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\.fn\.net\."),
        r"\1ffn.",
    ),
    (re.compile(r"^vlm\.image_proj_norm\."), "vlm.multi_modal_projector.image_proj_norm."),
    (re.compile(r"^vlm\.image_pos_embed\."), "vlm.multi_modal_projector.image_position_embed."),
    (re.compile(r"^vlm\.visual_temporal_embed\."), "vlm.multi_modal_projector.visual_temporal_embed."),
    (re.compile(r"^vlm\.language_model\.model\."), "vlm.language_model."),
]
_NATIVE_TO_REMOTE_RULES = [
    (re.compile(r"^vlm\.vision_tower\.convs\.(\d+)\.conv\."), r"vlm.vision_tower.convs.\1.proj."),
    (
        re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)conv([12])\."),
        r"\1conv\2.fn.dw.",
    ),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.spatial_block\.)norm1\."), r"\1window_attn.norm."),
    (re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.channel_block\.)norm1\."), r"\1channel_attn.norm."),
    (
        re.compile(
            r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)(window|channel)_attn\."
        ),
        r"\1\2_attn.fn.",
    ),
    (
        re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)norm2\."),
        r"\1ffn.norm.",
    ),
    (
        re.compile(r"^(vlm\.vision_tower\.blocks\.\d+\.\d+\.(?:spatial|channel)_block\.)ffn\."),
        r"\1ffn.fn.net.",
    ),
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
