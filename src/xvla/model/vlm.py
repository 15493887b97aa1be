"""The Florence-2 encoder path of X-VLA, built from the native ``transformers`` Florence-2 modules.

Only what X-VLA uses is instantiated: the DaViT vision tower, the multi-modal projector and the BART
*encoder* (the text decoder and LM head are never built). Attribute names match the native
``Florence2Model`` so that checkpoint keys read ``vlm.vision_tower...``, ``vlm.multi_modal_projector...``,
``vlm.language_model.encoder...`` and ``vlm.language_model.shared.weight``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BartConfig, Florence2Config
from transformers.models.bart.modeling_bart import BartEncoder
from transformers.models.florence2.modeling_florence2 import (
    Florence2MultiModalProjector,
    Florence2VisionBackbone,
)


def build_florence2_config(florence_config: dict[str, Any]) -> Florence2Config:
    """Native ``Florence2Config`` from our (native-form) ``florence_config`` dict."""
    vision = {k: v for k, v in florence_config["vision_config"].items() if k != "model_type"}
    text = {k: v for k, v in florence_config["text_config"].items() if k != "model_type"}
    text_config = BartConfig(**text)
    config = Florence2Config(vision_config=vision, text_config=text_config.to_dict())
    config.text_config._attn_implementation = "sdpa"
    return config


class LanguageEncoder(nn.Module):
    """The BART encoder and its token embedding (``shared``), without the decoder."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = BartEncoder(config)
        # One tensor, two names (checkpoints may carry either alias).
        self.encoder.embed_tokens.weight = self.shared.weight


class FlorenceEncoder(nn.Module):
    def __init__(self, florence_config: dict[str, Any]):
        super().__init__()
        config = build_florence2_config(florence_config)
        self.config = config
        self.vision_tower = Florence2VisionBackbone(config.vision_config)
        self.multi_modal_projector = Florence2MultiModalProjector(config)
        self.language_model = LanguageEncoder(config.text_config)
        self._init_buffers()

    def _init_buffers(self) -> None:
        # The temporal cosine table is a buffer that transformers fills in its own init hook.
        module = self.multi_modal_projector.visual_temporal_embed
        sine, cosine = module.get_sinusoid_embeddings(
            max_positions=module.max_seq_len, embed_dim=module.embed_dim
        )
        table = torch.empty(module.max_seq_len, module.embed_dim)
        table[:, 0::2] = sine
        table[:, 1::2] = cosine
        with torch.no_grad():
            module.pos_idx_to_embed.copy_(table)

    @property
    def hidden_size(self) -> int:
        return self.config.text_config.d_model

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised images -> [N, T_img, D] tokens (1 pooled + h*w spatial)."""
        weight = self.vision_tower.convs[0].conv.weight
        features = self.vision_tower(pixel_values.to(weight.dtype))
        # transformers 5 returns a model output, 4.57 (LeRobot 0.4.4's pin) the tensor itself.
        features = getattr(features, "last_hidden_state", features)
        return self.multi_modal_projector(features)

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        # A plain lookup (no embed_scale), as the released checkpoints were trained.
        return F.embedding(input_ids, self.language_model.shared.weight)

    def forward(
        self, input_ids: torch.Tensor, image_input: torch.Tensor, image_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Encode all cameras and the instruction (once per chunk).

        Returns ``vlm_features`` [B, T_img + L, D] (view 0 + text through the BART encoder, all tokens
        attended, padding included) and ``aux_visual_inputs`` [B, (V-1) * T_img, D] (the other views).
        """
        batch, views = image_input.shape[:2]
        mask = image_mask.reshape(-1).to(torch.bool)
        if not bool(image_mask[:, 0].all()):
            raise ValueError(
                "image_mask[:, 0] must be True: view 0 (the main camera) is required for every sample"
            )
        valid = self.encode_images(image_input.flatten(0, 1)[mask])
        tokens, dim = valid.shape[1:]
        image_features = valid.new_zeros(batch * views, tokens, dim)
        image_features[mask] = valid
        return self.fuse(image_features.view(batch, views, tokens, dim), input_ids)

    def fuse(self, image_features: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-view image tokens [B, V, T_img, D] (zeros for missing views) + text -> the outputs of forward.

        Split from :meth:`forward` so that the compiled fast path (:mod:`xvla.model.compiled_runner`), which encodes every
        view to keep shapes static, shares this step with the eager path.
        """
        batch, views, tokens, dim = image_features.shape
        text = self.embed_text(input_ids).to(image_features.dtype)
        merged = torch.cat([image_features[:, 0], text], dim=1)
        encoded = self.language_model.encoder(inputs_embeds=merged, attention_mask=None).last_hidden_state
        return {
            "vlm_features": encoded,
            "aux_visual_inputs": image_features[:, 1:].reshape(batch, -1, dim),
        }
