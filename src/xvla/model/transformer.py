"""The soft-prompted transformer: X-VLA's action head.

Sequence layout (one row per sample)::

    [ action tokens (T_a) | VLM tokens (T_v) | aux camera tokens (T_x) ] + pos_emb   ++   soft prompts (P)

Action tokens are ``action_encoder([noisy action, proprio, time embedding])``; the soft prompts are
a per-domain learned block appended without positional embedding. Only the action tokens are
decoded, so the last block computes their rows only (keys and values still cover every token).
Attribute names are the checkpoint keys (``transformer.blocks.0.attn.qkv.weight``...).

The context part (VLM and aux projections + their positional embeddings + soft prompts) does not
depend on the denoising step, so :meth:`SoftPromptedTransformer.encode_context` computes it once
per chunk and :meth:`SoftPromptedTransformer.denoise` reuses it at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .compiled_ops import Dropout, GeluTanh, attention
from .int8_linear import Int8Linear
from .linear import Linear, onednn_linear


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 100.0) -> torch.Tensor:
    """Sinusoidal embedding of (fractional) times t [B] -> [B, dim] laid out as [cos, sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class DomainAwareLinear(nn.Module):
    """A linear layer with one weight matrix and bias per domain (robot/dataset), picked per sample."""

    def __init__(self, in_features: int, out_features: int, num_domains: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.fc = nn.Embedding(num_domains, in_features * out_features)
        self.bias = nn.Embedding(num_domains, out_features)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, domain_id: torch.Tensor) -> torch.Tensor:
        batch = domain_id.shape[0]
        weight = self.fc(domain_id).view(batch, self.in_features, self.out_features)
        bias = self.bias(domain_id).view(batch, 1, self.out_features)
        if x.dim() == 2:
            return (torch.matmul(x.unsqueeze(1), weight) + bias).squeeze(1)
        return torch.matmul(x, weight) + bias


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.qkv = Linear(dim, dim * 3, bias=True)
        self.proj = Linear(dim, dim)  # no dropout after it, as in the reference (timm's default)

    def forward(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Self-attention over all of ``x``; with ``rows``, only the first ``rows`` positions' outputs."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rows is not None:
            q = q[:, :, :rows]
        x = attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).reshape(batch, q.shape[2], dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = GeluTanh()
        self.fc2 = Linear(hidden, dim)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.act) is GeluTanh and isinstance(self.fc1, Linear) and self.fc1.fuses_activation(x):
            hidden = onednn_linear(self.fc1, x, "gelu_tanh")  # the GELU in the GEMM's epilogue
        elif type(self.act) is GeluTanh and isinstance(self.fc1, Int8Linear):
            # This form, not GeluTanh's compiled one, is what inductor fuses into the int8 linear's epilogue;
            # unfused, the GELU would be computed twice in the next layer's input quantization (min/max, then
            # quantize).
            hidden = F.gelu(self.fc1(x), approximate="tanh")
        else:  # training, compiled graphs, fc1 wrapped (LoRA) or another activation
            hidden = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(hidden)))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x += Attn(LN(x)); x += MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """The block on ``x`` [B, L, H]; with ``rows``, only its first ``rows`` positions [B, rows, H].

        Every position is still attended to (keys and values); the queries, the MLP and everything after
        them run on the kept rows only, which is exact for those rows.
        """
        attended = self.attn(self.norm1(x), rows)
        x = (x if rows is None else x[:, :rows]) + attended
        return x + self.mlp(self.norm2(x))


@dataclass
class Context:
    """What the action head needs from the observation, computed once per chunk."""

    tokens: torch.Tensor  # [B, T_v + T_x + P, H]: projected VLM/aux tokens (+ pos emb) then soft prompts
    domain_id: torch.Tensor  # [B]


class SoftPromptedTransformer(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        multi_modal_input_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        num_domains: int,
        dim_action: int,
        dim_proprio: int,
        dim_time: int,
        len_soft_prompts: int,
        max_len_seq: int,
        use_hetero_proj: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.dim_action = dim_action
        self.dim_proprio = dim_proprio
        self.dim_time = dim_time
        self.len_soft_prompts = len_soft_prompts
        self.use_hetero_proj = use_hetero_proj
        self.gradient_checkpointing = False

        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        if use_hetero_proj:
            self.vlm_proj = DomainAwareLinear(multi_modal_input_size, hidden_size, num_domains)
            self.aux_visual_proj = DomainAwareLinear(multi_modal_input_size, hidden_size, num_domains)
        else:
            self.vlm_proj = Linear(multi_modal_input_size, hidden_size)
            self.aux_visual_proj = Linear(multi_modal_input_size, hidden_size)
        self.pos_emb = nn.Parameter(torch.zeros(1, max_len_seq, hidden_size))
        self.norm = nn.LayerNorm(hidden_size)
        self.action_encoder = DomainAwareLinear(dim_action + dim_proprio + dim_time, hidden_size, num_domains)
        self.action_decoder = DomainAwareLinear(hidden_size, dim_action, num_domains)
        if len_soft_prompts > 0:
            self.soft_prompt_hub = nn.Embedding(num_domains, len_soft_prompts * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.pos_emb, std=0.02)
        if self.len_soft_prompts > 0:
            nn.init.normal_(self.soft_prompt_hub.weight, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def max_len_seq(self) -> int:
        return self.pos_emb.shape[1]

    def _project(self, layer: nn.Module, x: torch.Tensor, domain_id: torch.Tensor) -> torch.Tensor:
        return layer(x, domain_id) if self.use_hetero_proj else layer(x)

    def encode_context(
        self,
        vlm_features: torch.Tensor,
        aux_visual_inputs: torch.Tensor,
        domain_id: torch.Tensor,
        num_actions: int,
    ) -> Context:
        context = torch.cat(
            [
                self._project(self.vlm_proj, vlm_features, domain_id),
                self._project(self.aux_visual_proj, aux_visual_inputs, domain_id),
            ],
            dim=1,
        )
        length = num_actions + context.shape[1]
        if length > self.max_len_seq:
            raise ValueError(
                f"sequence length {length} (chunk {num_actions} + {vlm_features.shape[1]} VLM tokens + "
                f"{aux_visual_inputs.shape[1]} aux camera tokens) exceeds max_len_seq={self.max_len_seq}; "
                "use fewer cameras / shorter text, or a model with a larger max_len_seq"
            )
        context = context + self.pos_emb[:, num_actions:length]
        if self.len_soft_prompts > 0:
            prompts = self.soft_prompt_hub(domain_id).view(-1, self.len_soft_prompts, self.hidden_size)
            context = torch.cat([context, prompts.to(context.dtype)], dim=1)
        return Context(tokens=context, domain_id=domain_id)

    def denoise(
        self, context: Context, action_with_noise: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """One network evaluation: noisy action chunk [B, T, D] at time t [B] -> predicted clean chunk."""
        batch, num_actions = action_with_noise.shape[:2]
        time = timestep_embedding(t, self.dim_time).to(action_with_noise.dtype)
        tokens = torch.cat(
            [
                action_with_noise,
                proprio.unsqueeze(1).expand(batch, num_actions, proprio.shape[-1]),
                time.unsqueeze(1).expand(batch, num_actions, self.dim_time),
            ],
            dim=-1,
        )
        x = self.action_encoder(tokens, context.domain_id) + self.pos_emb[:, :num_actions]
        x = torch.cat([x, context.tokens], dim=1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Only the action tokens are decoded, so the last block computes only their rows.
            rows = num_actions if i == last else None
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, rows, use_reentrant=False)
            else:
                x = block(x, rows)
        return self.action_decoder(self.norm(x[:, :num_actions]), context.domain_id)

    def forward(
        self,
        domain_id: torch.Tensor,
        vlm_features: torch.Tensor,
        aux_visual_inputs: torch.Tensor,
        action_with_noise: torch.Tensor,
        proprio: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        context = self.encode_context(vlm_features, aux_visual_inputs, domain_id, action_with_noise.shape[1])
        return self.denoise(context, action_with_noise, proprio, t)
