"""XVLAModel: Florence-2 encoder + soft-prompted transformer, trained and sampled with flow matching.

The network predicts the *clean* action chunk from a noisy one (not a velocity):

- training: ``t = (u + arange(B)/B) mod (1 - 1e-5)`` with one ``u ~ U(0, 1)`` per batch,
  ``x_t = t * eps + (1 - t) * a``, loss = ``action_space.compute_loss(net(x_t, t), a)``;
- sampling: ``x1 ~ N(0, I)``, ``a_hat = 0``; for ``i = steps..1``: ``t = i / steps``,
  ``a_hat = net(t * x1 + (1 - t) * a_hat, t)``; return ``action_space.postprocess(a_hat)``.

Image and text encoding, and the projections of their tokens, run once per chunk (:meth:`encode`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..actions import BaseActionSpace, build_action_space_for
from ..config import XVLAConfig
from ..domains import check_domain_ids
from ..utils import torch_dtype
from .prefix import DEFAULT_MAX_GUIDANCE, PrefixConstraint, build_prefix_constraint
from .transformer import Context, SoftPromptedTransformer
from .vlm import FlorenceEncoder


def _same_space(a: BaseActionSpace, b: BaseActionSpace) -> bool:
    return type(a) is type(b) and a.real_dim == b.real_dim and a.dim_action == b.dim_action


class XVLAModel(nn.Module):
    def __init__(self, config: XVLAConfig):
        super().__init__()
        self.config = config
        self.chunk_size = config.chunk_size
        self.action_space = build_action_space_for(config)
        self.dim_action = int(self.action_space.dim_action)
        # Domains whose robot uses another action space than ``action_space`` (robot adapters): one batch
        # can mix them; pre/post-processing then runs per group of samples (see ``space_groups``).
        self.domain_spaces: dict[int, BaseActionSpace] = {}
        self._groups_memo: tuple[torch.Tensor, list] | None = None
        # What inference runs through: None = the eager modules, or a CompiledRunner
        # (xvla.model.compiled_runner.compile_for_inference) that encode() and denoise_step() hand over to.
        self.runner = None
        self.dim_proprio = config.proprio_dim
        self.vlm = FlorenceEncoder(config.florence_config)
        self.transformer = SoftPromptedTransformer(
            hidden_size=config.hidden_size,
            multi_modal_input_size=config.projection_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            num_domains=config.num_domains,
            dim_action=self.dim_action,
            dim_proprio=self.dim_proprio,
            dim_time=config.dim_time,
            len_soft_prompts=config.len_soft_prompts,
            max_len_seq=config.max_len_seq,
            use_hetero_proj=config.use_hetero_proj,
        )
        self.apply_trainable_flags()
        self.to(self.dtype)

    # ------------------------------------------------------------------ set-up
    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.config.dtype)

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_emb.device

    @property
    def real_action_dim(self) -> int:
        return int(self.action_space.real_dim)

    # ------------------------------------------------------------------ token capacity
    def free_tokens(self) -> int:
        """Sequence positions left for image tokens once the action chunk and the text are placed."""
        return self.transformer.max_len_seq - self.chunk_size - self.config.tokenizer_max_length

    def image_tokens(self, image_size: tuple[int, int]) -> int:
        """How many sequence positions one camera view of ``image_size`` (height, width) takes."""
        height, width = image_size
        length = self.config.tokenizer_max_length
        try:
            with torch.inference_mode():
                enc = self.vlm(
                    torch.ones(1, length, dtype=torch.long, device=self.device),
                    torch.zeros(1, 1, 3, height, width, device=self.device, dtype=self.dtype),
                    torch.ones(1, 1, dtype=torch.bool, device=self.device),
                )
        except (IndexError, RuntimeError) as exc:
            raise ValueError(
                f"this checkpoint cannot encode {height}x{width} frames ({type(exc).__name__}: {exc}); set image_size "
                "in its config.json to the size it was trained at"
            ) from exc
        return int(enc["vlm_features"].shape[1]) - length

    def view_capacity(self, image_size: tuple[int, int]) -> int:
        """How many camera views of ``image_size`` fit in the sequence beside the action chunk and the text."""
        return self.free_tokens() // self.image_tokens(image_size)

    # ------------------------------------------------------------------ per-domain action spaces
    def set_domain_action_space(self, domain_id: int, space: BaseActionSpace | None) -> None:
        """Give ``domain_id`` its own action space (``None``: back to the model's); it must have this model's
        action width, since its domain rows of the action encoder / decoder are that wide."""
        self._groups_memo = None
        if space is None or _same_space(space, self.action_space):
            self.domain_spaces.pop(int(domain_id), None)
            return
        if int(space.dim_action) != self.dim_action:
            raise ValueError(
                f"action space '{space.name}' is {space.dim_action} channels wide in the model but this backbone's "
                f"action heads are {self.dim_action} wide: the robot cannot share this backbone"
            )
        self.domain_spaces[int(domain_id)] = space

    def space_for(self, domain_id: int) -> BaseActionSpace:
        return self.domain_spaces.get(int(domain_id), self.action_space)

    def action_widths(self, domain_id: Any) -> list[int]:
        """The robot action width of each sample of a batch with these domain ids."""
        ids = torch.as_tensor(domain_id).reshape(-1).tolist()
        return [int(self.space_for(d).real_dim) for d in ids]

    def space_groups(self, domain_id: torch.Tensor) -> list[tuple[BaseActionSpace, torch.Tensor | None]]:
        """(space, sample indices) for each action space in the batch; indices None = the whole batch."""
        if not self.domain_spaces:
            return [(self.action_space, None)]
        memo = self._groups_memo
        if memo is not None and memo[0] is domain_id:  # the same ids at every denoising step: group once
            return memo[1]
        groups = self._group_by_space(domain_id)
        self._groups_memo = (domain_id, groups)
        return groups

    def _group_by_space(self, domain_id: torch.Tensor) -> list[tuple[BaseActionSpace, torch.Tensor | None]]:
        ids = domain_id.reshape(-1).tolist()
        groups: dict[int, list[int]] = {}
        spaces: dict[int, BaseActionSpace] = {}
        for i, d in enumerate(ids):
            space = self.space_for(d)
            groups.setdefault(id(space), []).append(i)
            spaces[id(space)] = space
        if len(groups) == 1:
            return [(next(iter(spaces.values())), None)]
        return [(spaces[k], torch.tensor(v, device=domain_id.device)) for k, v in groups.items()]

    def _preprocess(self, domain_id: torch.Tensor, proprio: torch.Tensor, x_t: torch.Tensor):
        groups = self.space_groups(domain_id)
        if len(groups) == 1:
            return groups[0][0].preprocess(proprio, x_t)
        proprio_m, x_t_m = torch.empty_like(proprio), torch.empty_like(x_t)
        for space, idx in groups:
            proprio_m[idx], x_t_m[idx] = space.preprocess(proprio[idx], x_t[idx])
        return proprio_m, x_t_m

    def postprocess(self, domain_id: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Model actions -> robot actions, per sample's action space. In a batch of robots with different
        widths the result is as wide as the widest; a narrower robot's extra channels are NaN
        (``action_widths`` says how many are real)."""
        groups = self.space_groups(domain_id)
        if len(groups) == 1:
            return groups[0][0].postprocess(action)
        parts = [(idx, space.postprocess(action[idx])) for space, idx in groups]
        width = max(part.shape[-1] for _, part in parts)
        out = action.new_full((*action.shape[:-1], width), float("nan"))
        for idx, part in parts:
            out[idx, ..., : part.shape[-1]] = part
        return out

    def apply_trainable_flags(self) -> None:
        """Set requires_grad from the config's freeze/train switches (a real freeze, not a zero LR)."""
        cfg = self.config
        for p in self.vlm.vision_tower.parameters():
            p.requires_grad_(not cfg.freeze_vision_encoder)
        for p in self.vlm.language_model.parameters():
            p.requires_grad_(not cfg.freeze_language_encoder)
        for name, p in self.transformer.named_parameters():
            if name.startswith("soft_prompt_hub"):
                p.requires_grad_(cfg.train_soft_prompts)
            else:
                p.requires_grad_(cfg.train_policy_transformer)

    # ------------------------------------------------------------------ input checks
    def _index_tensors(self, domain_id, image_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Accept ints/lists and any integer or 0/1 dtype for the ids and the camera mask."""
        return (
            torch.as_tensor(domain_id, device=self.device).long(),
            torch.as_tensor(image_mask, device=self.device).bool(),
        )

    def _check_inputs(self, input_ids, image_input, image_mask, domain_id, proprio) -> None:
        if image_input.dim() != 5:
            raise ValueError(f"image_input must be [B, V, 3, H, W], got shape {tuple(image_input.shape)}")
        batch = image_input.shape[0]
        if input_ids.dim() != 2 or input_ids.shape[0] != batch:
            raise ValueError(f"input_ids must be [B={batch}, L], got shape {tuple(input_ids.shape)}")
        if tuple(image_mask.shape) != tuple(image_input.shape[:2]):
            raise ValueError(
                f"image_mask must be [B, V]={tuple(image_input.shape[:2])}, got {tuple(image_mask.shape)}"
            )
        if domain_id.shape != (batch,):
            raise ValueError(
                f"domain_id must be [B={batch}] (one id per sample), got shape {tuple(domain_id.shape)}"
            )
        check_domain_ids(domain_id, self.config.num_domains)
        if proprio.dim() != 2 or proprio.shape[0] != batch or proprio.shape[1] != self.dim_proprio:
            raise ValueError(
                f"proprio must be [B={batch}, {self.dim_proprio}] for this model "
                f"(use_proprio={self.config.use_proprio}, max_state_dim={self.config.max_state_dim}), "
                f"got shape {tuple(proprio.shape)}; zero-pad the state to {self.dim_proprio} dims"
            )

    # ------------------------------------------------------------------ encoding (once per chunk)
    def _use_runner(self) -> bool:
        return self.runner is not None and self.runner.active()

    def encode(
        self, input_ids, image_input, image_mask, domain_id, num_actions: int | None = None
    ) -> Context:
        """Images and text -> the context every denoising step of the chunk attends to."""
        if self._use_runner():
            return self.runner.encode(input_ids, image_input, image_mask, domain_id, num_actions)
        return self.encode_eager(input_ids, image_input, image_mask, domain_id, num_actions)

    def encode_eager(
        self, input_ids, image_input, image_mask, domain_id, num_actions: int | None = None
    ) -> Context:
        enc = self.vlm(input_ids, image_input.to(self.dtype), image_mask)
        return self.transformer.encode_context(
            enc["vlm_features"], enc["aux_visual_inputs"], domain_id, num_actions or self.chunk_size
        )

    def denoise_step(
        self, context: Context, x_t: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The network's clean-action estimate for the noisy chunk ``x_t`` at time ``t``."""
        if self._use_runner():
            return self.runner.denoise_step(context, x_t, proprio, t)
        return self.denoise_step_eager(context, x_t, proprio, t)

    def denoise_step_eager(
        self, context: Context, x_t: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        proprio_m, x_t_m = self._preprocess(context.domain_id, proprio, x_t)
        return self.transformer.denoise(context, x_t_m, proprio_m, t)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate_actions(
        self,
        input_ids: torch.Tensor,
        image_input: torch.Tensor,
        image_mask: torch.Tensor,
        domain_id: torch.Tensor,
        proprio: torch.Tensor,
        steps: int | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        prefix: torch.Tensor | None = None,
        prefix_weights: torch.Tensor | None = None,
        guidance: str = "inpaint",
        max_guidance: float = DEFAULT_MAX_GUIDANCE,
    ) -> torch.Tensor:
        """Denoise an action chunk: returns [B, chunk, real_action_dim] after the space's postprocess.

        ``prefix`` [B, d, real_action_dim] (robot space, as this method returns actions) constrains the
        first d actions, each with a weight in ``prefix_weights`` ([d] or [B, d], default 1): real-time
        chunking. ``guidance`` is ``"inpaint"`` (exact where the weight is 1) or ``"guided"`` (a
        vector-Jacobian correction, clipped at ``max_guidance``); see :mod:`xvla.model.prefix`.
        """
        was_training = self.training
        self.eval()
        domain_id, image_mask = self._index_tensors(domain_id, image_mask)
        try:
            self._check_inputs(input_ids, image_input, image_mask, domain_id, proprio)
            proprio = proprio.to(self.dtype)
            batch = image_input.shape[0]
            shape = (batch, self.chunk_size, self.dim_action)
            x1 = self._start_noise(noise, shape, generator)
            constraint = None
            if prefix is not None:
                constraint = self._prefix_constraint(
                    domain_id, prefix, prefix_weights, shape, guidance, max_guidance
                )
            context = self.encode(input_ids, image_input, image_mask, domain_id)
            steps = max(1, int(steps if steps is not None else self.config.num_denoising_steps))
            action = torch.zeros_like(x1)
            for i in range(steps, 0, -1):
                t = torch.full((batch,), i / steps, device=self.device, dtype=self.dtype)
                x_t = x1 * t.view(-1, 1, 1) + action * (1 - t).view(-1, 1, 1)
                if constraint is None:
                    action = self.denoise_step(context, x_t, proprio, t)
                else:
                    action = self._constrained_step(context, x_t, proprio, t, i / steps, constraint)
            return self.postprocess(domain_id, action)
        finally:
            self.train(was_training)

    def _start_noise(
        self, noise: torch.Tensor | None, shape: tuple[int, int, int], generator: torch.Generator | None
    ) -> torch.Tensor:
        """x at t=1: the given noise (checked against ``shape``), else a draw from ``generator``."""
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape} = [B, chunk_size, model action dim], got {tuple(noise.shape)}"
            )
        return noise.to(device=self.device, dtype=self.dtype)

    def _prefix_constraint(
        self,
        domain_id: torch.Tensor,
        prefix: torch.Tensor,
        prefix_weights: torch.Tensor | None,
        shape: tuple[int, int, int],
        guidance: str,
        max_guidance: float,
    ) -> PrefixConstraint:
        """rtc's committed prefix as a sampling constraint; the batch must share one action space."""
        groups = self.space_groups(domain_id)
        if len(groups) > 1:
            raise ValueError(
                "a committed prefix needs one action space per batch: these samples' robots "
                "use different ones; constrain them in separate calls"
            )
        return build_prefix_constraint(
            groups[0][0],
            prefix,
            prefix_weights,
            shape,
            mode=guidance,
            max_guidance=max_guidance,
            dtype=self.dtype,
            device=self.device,
        )

    def _constrained_step(
        self,
        context: Context,
        x_t: torch.Tensor,
        proprio: torch.Tensor,
        t: torch.Tensor,
        level: float,
        constraint: PrefixConstraint,
    ) -> torch.Tensor:
        """One denoising step whose clean estimate is pulled towards the committed prefix."""
        if constraint.mode == "inpaint":
            return constraint.inpaint(self.denoise_step(context, x_t, proprio, t))
        # Guidance differentiates through the network; tensors made under inference_mode cannot be saved.
        with torch.inference_mode(False):
            context = Context(tokens=context.tokens.clone(), domain_id=context.domain_id.clone())
            proprio, t = proprio.clone(), t.clone()
        return constraint.guide(lambda x: self.denoise_step(context, x, proprio, t), x_t, level)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        input_ids: torch.Tensor,
        image_input: torch.Tensor,
        image_mask: torch.Tensor,
        domain_id: torch.Tensor,
        proprio: torch.Tensor,
        action: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss terms (a dict; the training loss is their sum)."""
        domain_id, image_mask = self._index_tensors(domain_id, image_mask)
        self._check_inputs(input_ids, image_input, image_mask, domain_id, proprio)
        if action.dim() != 3 or action.shape[0] != image_input.shape[0]:
            raise ValueError(f"action must be [B, chunk, action_dim], got shape {tuple(action.shape)}")
        batch = action.shape[0]
        proprio = proprio.to(self.dtype)
        action = action.to(device=self.device, dtype=self.dtype)
        if t is None:
            u = torch.rand(1, generator=generator, device=self.device, dtype=torch.float32)
            t = (u + torch.arange(batch, device=self.device, dtype=torch.float32) / batch) % (1 - 1e-5)
        t = t.to(device=self.device, dtype=self.dtype).reshape(batch)
        if noise is None:
            noise = torch.randn(action.shape, generator=generator, device=self.device, dtype=torch.float32)
        elif noise.shape != action.shape:
            raise ValueError(
                f"noise must have the action's shape {tuple(action.shape)}, got {tuple(noise.shape)}"
            )
        noise = noise.to(device=self.device, dtype=self.dtype)
        x_t = noise * t.view(-1, 1, 1) + action * (1 - t).view(-1, 1, 1)
        context = self.encode(input_ids, image_input, image_mask, domain_id, num_actions=action.shape[1])
        pred = self.denoise_step(context, x_t, proprio, t)
        groups = self.space_groups(domain_id)
        if len(groups) == 1:
            return groups[0][0].compute_loss(pred, action)
        losses: dict[str, torch.Tensor] = {}
        for space, idx in groups:  # each robot's loss terms, weighted by its share of the batch
            for name, value in space.compute_loss(pred[idx], action[idx]).items():
                losses[name] = losses.get(name, 0) + value * (len(idx) / batch)
        return losses
