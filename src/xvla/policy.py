"""XVLAPolicy: the user-facing policy (load, save, predict), the one place where processing meets the model.

Batches use LeRobot keys::

    observation.images.<camera>   [B, 3, H, W] float in [0, 1] or uint8 (or HxWx3 numpy frames)
    observation.state             [B, S]   (zero-padded to max_state_dim)
    task                          list of B instruction strings   (or observation.language.tokens [B, L])
    domain_id                     int or [B] (defaults to config.domain_id)
    action                        [B, chunk, A]  (training only)
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints as ckpt
from .adapters import (
    AdapterInfo,
    adapter_action_space,
    check_compatible,
    merge_lora,
    read_adapter,
    split_lora,
)
from .config import XVLAConfig
from .domains import check_domain_ids, is_released_base, smallest_free, trained_domains, used_domains
from .hardware import choose, emulated_bf16_warning
from .hub import resolve_checkpoint_dir
from .model.xvla import XVLAModel
from .processor import MODEL_INPUTS, ObservationProcessor
from .utils import resolve_device

logger = logging.getLogger(__name__)

OPTIONAL_BUFFERS = ("vlm.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed",)


def _fast_arguments(device, compile, quantize, config_overrides: dict[str, Any]):
    """``fast=True``: :func:`xvla.hardware.choose`'s setting, for whatever the caller did not give."""
    setting = choose(device)
    config_overrides.setdefault("dtype", setting.dtype)
    logger.info("fast=True: %s (%s)", setting.kwargs(), setting.reason)
    return (
        device if device is not None else setting.device,
        setting.compile if compile is None else compile,
        quantize if quantize is not None else setting.quantize,
    )


def _quantize(policy: XVLAPolicy, quantize: str | None) -> None:
    """Replace the linears with int8 ones (``"int8"``); ``None`` / ``"none"``: full precision."""
    if quantize in (None, "none"):
        return
    if quantize != "int8":
        raise ValueError(f"quantize={quantize!r} is unknown: use 'int8', or 'none' for full precision")
    if policy.device.type != "cpu":
        raise ValueError(
            f"quantize='int8' runs oneDNN's int8 kernels, on CPU only (this policy is on {policy.device}); "
            "on a GPU use dtype='bfloat16' with compile=True"
        )
    from .model.int8_linear import quantize_int8

    quantize_int8(policy.model)


class XVLAPolicy(nn.Module):
    def __init__(self, config: XVLAConfig, tokenizer: Any | None = None):
        super().__init__()
        self.config = config
        self.model = XVLAModel(config)
        self.processor = ObservationProcessor(config, tokenizer)
        self.source_dir: Path | None = None  # the folder this policy was loaded from (tokenizer files)
        self.adapters: dict[str, AdapterInfo] = {}  # robot name -> the adapter loaded for it
        # Taken before adapters record a domain table: the released ids stay reserved on the released base.
        self.released_base = is_released_base(config)
        self.reset()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        tokenizer: Any | None = None,
        strict: bool = True,
        revision: str | None = None,
        compile: bool | None = None,
        compile_batch_sizes: tuple[int, ...] | None = None,
        quantize: str | None = None,
        fast: bool = False,
        **config_overrides: Any,
    ) -> XVLAPolicy:
        """Load an X-VLA checkpoint in our, LeRobot's or the official format (auto-detected).

        ``config_overrides`` replace config fields (e.g. ``dtype="bfloat16"``, ``domain_id=3``).
        ``fast=True`` picks the fastest correct inference setting for this machine (:func:`xvla.hardware.choose`:
        bf16 + compile on a GPU or an AMX CPU, int8 linears + compile with fp32 for the rest on other CPUs);
        ``device``, ``dtype``, ``compile`` and ``quantize`` given explicitly win over its choice
        (``quantize="none"`` keeps the linears in full precision).
        ``compile=True`` turns on the fast inference path (:mod:`xvla.model.compiled_runner`: compiled graphs with frozen
        weights at the batch sizes ``compile_batch_sizes``, default 1, 2, 4, 8). ``quantize="int8"``: int8
        linear layers for CPU inference (:mod:`xvla.model.int8_linear`). ``dtype="bfloat16"`` on a CPU
        without bf16 units is emulated, slower than float32, and loading warns.
        """
        if fast:
            device, compile, quantize = _fast_arguments(device, compile, quantize, config_overrides)
        folder = resolve_checkpoint_dir(path_or_hub_id, revision=revision)
        raw = ckpt.read_config_json(folder)
        config, fmt = ckpt.config_from_json(raw, folder)
        if config_overrides:
            config = config.replace(**config_overrides)
        # Build in float32 and cast after loading, so bf16 weights are rounded once from the file's values.
        policy = cls(config.replace(dtype="float32"), tokenizer=tokenizer)
        state_dict = ckpt.to_internal_state_dict(ckpt.load_weights_file(folder), fmt)
        policy.load_model_state_dict(state_dict, strict=strict, source=str(folder))
        policy.config = policy.model.config = config
        policy.model.to(policy.model.dtype)
        policy.processor = ObservationProcessor(config, tokenizer, tokenizer_dir=folder)
        policy.source_dir = folder
        policy.checkpoint_format = fmt
        if device is not None:
            policy.to(resolve_device(device))
        policy.eval()
        advice = emulated_bf16_warning(policy.model.dtype, policy.device)
        if advice:
            logger.warning(advice)
        _quantize(policy, quantize)
        if compile:
            from .model.compiled_runner import DEFAULT_BATCH_SIZES, compile_for_inference

            compile_for_inference(policy.model, batch_sizes=compile_batch_sizes or DEFAULT_BATCH_SIZES)
        return policy

    def load_model_state_dict(
        self, state_dict: dict[str, torch.Tensor], strict: bool = True, source: str = ""
    ) -> None:
        expected = self.model.state_dict()
        missing = [k for k in expected if k not in state_dict and k not in OPTIONAL_BUFFERS]
        unexpected = [k for k in state_dict if k not in expected]
        mismatched = [
            f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in expected
            if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
        ]
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {missing}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {unexpected}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {mismatched}")
        if problems:
            message = (
                f"weights in {source or 'the state dict'} do not match the model built from its config: "
                + "; ".join(problems)
                + ". Check that config.json belongs to these weights (action_mode, max_state_dim, "
                "use_hetero_proj, num_domains, florence_config)."
            )
            if strict or mismatched:
                raise ValueError(message)
            logger.warning(message)
        self.model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)

    def save_pretrained(self, directory: str | os.PathLike, format: str = "xvla") -> Path:
        """Write config.json + model.safetensors + tokenizer files (+ xvla.json for other formats)."""
        if self.model.domain_spaces:
            own = sorted(a.name for a in self.adapters.values() if a.domain_id in self.model.domain_spaces)
            raise ValueError(
                f"adapters {own} use their own action spaces, which a checkpoint (one action_mode) cannot hold: "
                "save the base checkpoint without them and keep the adapters as files (xvla adapter export)"
            )
        return ckpt.write_checkpoint(
            directory,
            self.model.state_dict(),
            self.config,
            format,
            tokenizer=self.processor.loaded_tokenizer,
            source_dir=self.source_dir,
        )

    # ------------------------------------------------------------------ adapters
    @torch.no_grad()
    def load_adapter(
        self, path: str | os.PathLike, name: str | None = None, domain_id: int | None = None
    ) -> AdapterInfo:
        """Load a robot adapter (``xvla adapter export``) into a free domain slot (or ``domain_id``).

        The robot may use another action mode or width than the base (same model action width): its
        samples are pre/post-processed with its own action space, also in a batch mixed with other robots.
        A LoRA adapter changes the shared backbone, so it is merged in and must be the only adapter.
        Refused with a clear error: a file made for another backbone or with other table shapes.
        Select the robot in a batch with ``robot=name`` or its ``domain_id``.
        """
        tensors, metadata = read_adapter(path)
        name = name or metadata["name"]
        lora_owner = next((a.name for a in self.adapters.values() if a.metadata.get("lora")), None)
        if lora_owner is not None:
            raise ValueError(
                f"LoRA adapter {lora_owner!r} has changed this policy's backbone: load {name!r} into a "
                "fresh copy of the base checkpoint"
            )
        if metadata.get("lora") and self.adapters:
            raise ValueError(
                f"adapter {path} holds LoRA weights, which change the backbone every robot shares: load "
                f"it into a policy with no other adapter (loaded: {sorted(self.adapters)})"
            )
        check_compatible(self.model, tensors, metadata, path)
        if name in self.adapters:
            raise ValueError(
                f"an adapter named {name!r} is loaded already (domain {self.adapters[name].domain_id})"
            )
        if domain_id is None:  # loaded adapters are in the table (recorded below), so their ids are used
            used = used_domains(self.config, self.released_base)
            domain_id = smallest_free(used, self.config.num_domains, "pass domain_id= to replace one")
        check_domain_ids(domain_id, self.config.num_domains, "domain_id")
        rows, lora = split_lora(tensors)
        params = dict(self.model.named_parameters())
        for key, row in rows.items():
            params[key][domain_id].copy_(row.to(params[key].dtype))
        if lora:
            merge_lora(self.model, lora, metadata["lora"], path)
        self.model.set_domain_action_space(domain_id, adapter_action_space(metadata))
        if self.model.runner is not None:
            self.model.runner.weights_changed()
        self.config.domains = {**trained_domains(self.config), domain_id: name}
        self.adapters[name] = AdapterInfo(name, domain_id, str(path), metadata)
        return self.adapters[name]

    def action_widths(self, robots: Any) -> list[int]:
        """The action width of each robot (names, or domain ids): in a batch mixing robots of different
        widths, ``predict_action_chunk`` returns the widest and fills a narrower robot's extra channels with NaN."""
        names = [robots] if isinstance(robots, str) else robots
        if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
            robots = self.processor.robot_ids(names)
        return self.model.action_widths(robots)

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self.processor.tokenizer = value

    # ------------------------------------------------------------------ batch -> model inputs
    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare_inputs(self, batch: dict[str, Any] | list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Raw observations -> the model inputs that :meth:`generate` and :meth:`loss` take, on this device.

        ``batch`` is a LeRobot-style batch, or a list of single observations (any frame sizes and state
        widths). Both go through :attr:`processor`, the one observation pipeline.
        """
        inputs = self.processor.collate(batch) if isinstance(batch, list) else self.processor(batch)
        return {k: v.to(self.device) for k, v in inputs.items()}

    # ------------------------------------------------------------------ inference
    def reset(self) -> None:
        """Clear the action queue (call at the start of every episode)."""
        self._action_queue: deque[torch.Tensor] = deque(maxlen=self.config.n_action_steps)

    @torch.no_grad()
    def predict_action_chunk(
        self,
        batch: dict[str, Any],
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        prefix: torch.Tensor | None = None,
        prefix_weights: torch.Tensor | None = None,
        guidance: str = "inpaint",
    ) -> torch.Tensor:
        """A full action chunk [B, chunk_size, real_action_dim] (float32) for a batch of raw observations.

        ``prefix`` [B, d, real_action_dim]: actions the robot has committed to (real-time chunking),
        weighted by ``prefix_weights`` ([d] or [B, d]); see ``XVLAModel.generate_actions``.
        """
        self.eval()
        return self.generate(
            self.prepare_inputs(batch),
            noise=noise,
            steps=steps,
            prefix=prefix,
            prefix_weights=prefix_weights,
            guidance=guidance,
            generator=generator,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: dict[str, torch.Tensor],
        noise: torch.Tensor | None = None,
        steps: int | None = None,
        prefix: torch.Tensor | None = None,
        *,
        prefix_weights: torch.Tensor | None = None,
        guidance: str = "inpaint",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Model inputs (:meth:`prepare_inputs`, or prepared samples concatenated along the batch) -> the
        action chunk [B, chunk_size, real_action_dim] (float32), one independent sample per row.

        ``noise`` [B, chunk_size, model action dim] is the starting point (else drawn from ``generator``);
        ``steps`` defaults to ``config.num_denoising_steps``; ``prefix`` as in :meth:`predict_action_chunk`.
        """
        tensors = {k: inputs[k].to(self.device) for k in MODEL_INPUTS}
        constraint = (
            {}
            if prefix is None
            else {"prefix": prefix, "prefix_weights": prefix_weights, "guidance": guidance}
        )
        actions = self.model.generate_actions(
            **tensors,
            steps=steps or self.config.num_denoising_steps,
            noise=noise,
            generator=generator,
            **constraint,
        )
        return actions.float()

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any], noise: torch.Tensor | None = None) -> torch.Tensor:
        """One action [B, real_action_dim]; a new chunk is predicted every ``n_action_steps`` calls."""
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch, noise=noise)
            self._action_queue.extend(chunk.transpose(0, 1)[: self.config.n_action_steps])
        return self._action_queue.popleft()

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], **kwargs: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss for a batch of raw observations: (total, {term: value, "loss": total})."""
        if "action" not in batch:
            raise KeyError("the batch has no 'action': training needs the action chunk targets")
        inputs = self.prepare_inputs(batch)
        inputs["action"] = self.processor.actions(batch["action"], self.model.action_space)
        losses = self.loss(inputs, **kwargs)
        total = sum(losses.values())
        logs = {k: float(v.detach()) for k, v in losses.items()}
        logs["loss"] = float(total.detach())
        return total, logs

    def loss(self, inputs: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Flow-matching loss terms (the training loss is their sum) for model inputs plus ``action``, the
        targets in the model's action space [B, chunk, model action dim] (what ``processor.collate`` makes).

        ``kwargs``: ``t``, ``noise`` or ``generator`` of ``XVLAModel.forward``.
        """
        tensors = {k: torch.as_tensor(inputs[k]).to(self.device) for k in (*MODEL_INPUTS, "action")}
        return self.model(**tensors, **kwargs)
