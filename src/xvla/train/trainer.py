"""The training loop: datasets -> batches -> flow-matching loss -> AdamW over named groups.

``train(TrainConfig)`` runs single-process or under ``torchrun`` / ``accelerate launch`` (DDP or
FSDP2), and resumes from ``output_dir`` so that the loss curve equals an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoints as ckpt
from ..actions import build_action_space_for
from ..config import XVLAConfig
from ..domains import used_domains
from ..policy import XVLAPolicy
from ..tokenizer import load_tokenizer
from ..utils import Interrupted, write_json
from . import distributed as dist_utils
from . import state as st
from .checkpointer import Checkpointer, SigtermSave, interrupted_message
from .config import PARAM_GROUPS, TrainConfig
from .embodiment import check_init_from, copy_domain, pick_domain
from .lora import apply_lora
from .mixture import (
    Collator,
    MixtureBatchSampler,
    MixtureDataset,
    build_loader,
    dataset_root,
    describe,
    model_camera_keys,
    open_sources,
    unwrap_worker_error,
)
from .optim import GroupLRScheduler, build_optimizer, build_schedules
from .params import DomainRowKeeper, apply_requires_grad, count_table, select_trainable
from .speed import compile_for_training, fused_adamw_supported
from .tracking import METRICS_CSV, PLOT_NAME, MetricsLogger, plot_metrics

logger = logging.getLogger(__name__)
TRAIN_CONFIG = "train_config.json"
ADAPTER_NAME = "adapter.safetensors"


class TrainingModule(nn.Module):
    """What DDP/FSDP wrap: batch -> (total loss, {term: loss}). Honours per-sample camera masks."""

    def __init__(self, policy: XVLAPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``batch`` comes from :class:`~xvla.train.mixture.Collator`: the processor's model inputs + targets."""
        losses = self.policy.loss(batch)
        total = sum(losses.values())
        return total, losses


@dataclass
class TrainResult:
    output_dir: Path
    final_model_dir: Path | None
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    trainable: dict[str, dict[str, int]] = field(default_factory=dict)
    is_main: bool = True


# ---------------------------------------------------------------------------------------------- helpers
def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _use_bf16(cfg: TrainConfig, save_dtype: str, device: torch.device) -> bool:
    if cfg.mixed_precision == "bf16":
        return True
    if cfg.mixed_precision == "no":
        return False
    if save_dtype == "bfloat16":
        return True
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")  # `accelerate launch --mixed_precision ...`
    if launcher in ("bf16", "no"):
        return launcher == "bf16"
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def _scratch_config(policy_args: dict[str, Any], metas: list[Any], dataset_cfgs) -> XVLAConfig:
    """A from-scratch config: the given fields, with cameras and the action width read from the data."""
    args = dict(policy_args)
    config = XVLAConfig.from_dict(args)
    if config.image_keys is None:
        config = config.replace(image_keys=model_camera_keys(config, dataset_cfgs, metas))
    if config.action_mode.lower() == "auto" and config.real_action_dim is None:
        widths = []
        for cfg, meta in zip(dataset_cfgs, metas, strict=True):
            key = cfg.keys.get("action", "action")
            if key in meta.features:
                widths.append(int(math.prod(meta.features[key]["shape"])))
        if widths:
            width = max(widths)
            config = config.replace(real_action_dim=width, max_action_dim=max(config.max_action_dim, width))
    return config


def _read_metas(cfg: TrainConfig):
    from ..data import LeRobotDatasetMeta

    return [LeRobotDatasetMeta(dataset_root(d)) for d in cfg.datasets()]


@dataclass
class RunParts:
    """What one training run builds, phase by phase (see ``Trainer._build_and_train``)."""

    start_step: int
    policy: XVLAPolicy
    save_dtype: str
    source: Path | None
    domains: dict[int, str]
    lora: bool
    sources: list = field(default_factory=list)
    trainable: dict[str, bool] = field(default_factory=dict)
    keeper: DomainRowKeeper | None = None
    counts: dict = field(default_factory=dict)
    bf16: bool = False
    module: Any = None
    optimizer: Any = None
    scheduler: Any = None
    sampler: Any = None
    loader: Any = None


class _Interval:
    """Loss terms and gradient norms summed since the last log line."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
        for k, v in {**terms, "grad_norm": grad_norm.detach().float()}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1


def _enable_gradient_checkpointing(policy: XVLAPolicy) -> None:
    policy.model.transformer.gradient_checkpointing = True
    encoder = policy.model.vlm.language_model.encoder
    if hasattr(encoder, "activation_checkpointing_enable"):  # transformers >= 5
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


# ---------------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run: the set-up phases, then the loop. Saving and resuming go through ``self.checkpoints``
    (:class:`~xvla.train.checkpointer.Checkpointer`)."""

    def __init__(self, cfg: TrainConfig, tokenizer: Any = None, stop_at: int | None = None):
        cfg.validate()
        self.cfg = cfg
        self.stop_at = stop_at  # stop after this step without a final save (simulates an interruption)
        self.env = dist_utils.setup(cfg.device)
        self.tokenizer = tokenizer
        self.history: list[dict[str, float]] = []
        self.samples_seen: list[tuple[int, int]] = []
        self.sigterm = SigtermSave(self.env.distributed)
        self.checkpoints: Checkpointer | None = None  # once the output folder is known

    def _log(self, message: str) -> None:
        if self.env.is_main:
            print(message, flush=True)

    # -------------------------------------------------------------- entry
    def train(self) -> TrainResult:
        try:
            with self.sigterm.installed():
                return self._build_and_train()
        except KeyboardInterrupt:
            raise Interrupted(interrupted_message(self.cfg.output_dir, self.sigterm.requested)) from None
        finally:
            dist_utils.teardown(self.env)

    def _build_and_train(self) -> TrainResult:
        parts = self._start()
        self._open_data(parts)
        self._choose_trainable(parts)
        self._build_optimizer(parts)
        if self.cfg.dry_run:
            names = [g["name"] for g in parts.optimizer.param_groups]
            self._log(
                lr_table(
                    build_schedules(self.cfg.optimizer, self.cfg.scheduler, self.cfg.steps), self.cfg, names
                )
            )
            return TrainResult(
                self.checkpoints.out, None, parts.start_step, [], parts.counts, self.env.is_main
            )
        self._build_loader(parts)
        return self._train_and_write_outputs(parts)

    # -------------------------------------------------------------- set-up phases
    def _start(self) -> RunParts:
        """Output folder, resume point, the policy and its domains, the tokenizer."""
        cfg = self.cfg
        self.checkpoints = Checkpointer.open(cfg, self.env, self._log)
        resume_from = self.checkpoints.resume_from
        start_step = self.checkpoints.start_step()
        if start_step >= cfg.steps:
            raise ValueError(
                f"the checkpoint is at step {start_step} >= --steps={cfg.steps}: raise --steps to go on"
            )
        st.seed_everything(cfg.seed)
        metas = _read_metas(cfg)
        policy, save_dtype, source = self._build_policy(metas, resume_from)
        lora = cfg.lora.enable or cfg.trainable == "lora"
        if resume_from is None or lora:
            domains = self._apply_new_domain(policy, source)
            self._fit_action_width(policy, metas, source)
        else:
            domains = dict(policy.config.domains or {})
        if policy.config.image_keys is None:
            # Checkpoints without image_keys take the batch's cameras in sorted order; make it explicit.
            policy.config.image_keys = sorted(model_camera_keys(policy.config, cfg.datasets(), metas))
        self._tokenizer(policy)
        self._warn_unset_real_action_dim(policy.config, metas)
        return RunParts(start_step, policy, save_dtype, source, domains, lora)

    def _build_policy(self, metas, resume_from: Path | None) -> tuple[XVLAPolicy, str, Path | None]:
        cfg = self.cfg
        args = dict(cfg.policy)
        path = args.pop("path", None)
        kind = args.pop("type", "xvla")
        if kind != "xvla":
            raise ValueError(
                f"policy.type={kind!r} is not supported here: this trainer trains 'xvla' policies"
            )
        save_dtype = args.pop("dtype", None)
        lora = cfg.lora.enable or cfg.trainable == "lora"
        if lora and not path:
            raise ValueError("the lora recipe adapts a pretrained model: give --policy.path=<checkpoint>")
        if resume_from is not None and not lora:
            source = resume_from / st.PRETRAINED
            policy = XVLAPolicy.from_pretrained(source, tokenizer=self.tokenizer, dtype="float32")
            save_dtype = save_dtype or st.read_json(source / ckpt.CONFIG_NAME).get("dtype", "float32")
            return policy, save_dtype, source
        if path:
            policy = XVLAPolicy.from_pretrained(
                path, tokenizer=self.tokenizer, **{**args, "dtype": "float32"}
            )
            source = policy.source_dir
            if save_dtype is None:
                save_dtype = st.read_json(Path(source) / ckpt.CONFIG_NAME).get("dtype", "float32")
                save_dtype = save_dtype if save_dtype in ("float32", "bfloat16") else "float32"
            return policy, save_dtype, source
        config = _scratch_config({**args, "dtype": "float32"}, metas, cfg.datasets())
        return XVLAPolicy(config, tokenizer=self.tokenizer), save_dtype or "float32", None

    def _tokenizer(self, policy: XVLAPolicy):
        """Load the tokenizer now (a missing one fails before any data is read), in the policy's processor."""
        if self.tokenizer is not None:
            policy.tokenizer = self.tokenizer
        elif self.cfg.tokenizer:
            policy.tokenizer = load_tokenizer(self.cfg.tokenizer)
        self.tokenizer = policy.tokenizer
        return self.tokenizer

    def _apply_new_domain(self, policy: XVLAPolicy, source: Path | None) -> dict[int, str]:
        cfg = self.cfg
        config = policy.config
        domains = used_domains(config) if source else {}  # a model built from scratch has no domains yet
        requested = cfg.new_domain.id
        if requested is None:
            return domains
        new_id = pick_domain(requested, config.num_domains, domains)
        why = (
            f"--new_domain.id={requested}"
            if requested != "auto"
            else f"the smallest id not in use (used: {sorted(domains)}); --new_domain.id=N picks another"
        )
        if cfg.new_domain.init_from is not None:
            check_init_from(int(cfg.new_domain.init_from), domains)
            copied = copy_domain(policy.model, int(cfg.new_domain.init_from), new_id)
            self._log(
                f"new domain {new_id} ({why}): initialised from domain {cfg.new_domain.init_from} ({len(copied)} tables)"
            )
        else:
            self._log(f"new domain {new_id} ({why}): fresh soft prompt and heads")
        config.domain_id = new_id
        cfg.new_domain.id = new_id  # the resolved id is what the saved train config records
        return domains

    def _dataset_action_widths(self, metas) -> set[int]:
        keys = [d.keys.get("action", "action") for d in self.cfg.datasets()]
        return {
            int(math.prod(m.features[k]["shape"]))
            for k, m in zip(keys, metas, strict=True)
            if k in m.features
        }

    def _fit_action_width(self, policy: XVLAPolicy, metas, source: Path | None) -> None:
        """Phase II on a robot whose actions differ in width from the checkpoint's: in ``auto`` mode the new
        domain trains the dataset's width (else the loss covers only part of it); fixed modes are refused later
        by ``check_action_width``, before the first step."""
        config, widths = policy.config, self._dataset_action_widths(metas)
        if (
            source is None
            or self.cfg.new_domain.id is None
            or not widths
            or str(config.action_mode).lower() != "auto"
        ):
            return
        width, current = max(widths), policy.model.real_action_dim
        if width == current:
            return
        if width > config.max_action_dim:
            raise ValueError(
                f"the dataset has {width}-dim actions but this checkpoint's action head is max_action_dim="
                f"{config.max_action_dim} wide: Phase II cannot widen it; pick a checkpoint with max_action_dim >= {width}"
            )
        config.real_action_dim = width
        policy.model.action_space = build_action_space_for(config)
        self._log(
            f"Phase II: the dataset has {width}-dim actions, the checkpoint {current} (real_action_dim): the new "
            f"domain {config.domain_id} trains and serves {width}-dim actions (real_action_dim={width})"
        )

    def _warn_unset_real_action_dim(self, config: XVLAConfig, metas) -> None:
        if config.action_mode.lower() != "auto" or config.real_action_dim is not None:
            return
        widths = self._dataset_action_widths(metas)
        if widths and max(widths) < config.max_action_dim:
            self._log(
                f"warning: action_mode 'auto' without real_action_dim: the loss also covers the "
                f"{config.max_action_dim - max(widths)} zero-padded action dims; pass "
                f"--policy.real_action_dim={max(widths)} to train (and serve) {max(widths)}-dim actions"
            )

    def _open_data(self, parts: RunParts) -> None:
        """The datasets, the domain each trains, and the names the checkpoint records for them."""
        cfg, config = self.cfg, parts.policy.config
        parts.sources = open_sources(cfg, config, list(config.image_keys))
        for s in parts.sources:
            if cfg.new_domain.id is not None and s.domain_id == config.domain_id:
                parts.domains[s.domain_id] = s.label  # Phase II: this id now means this robot
            else:
                parts.domains.setdefault(s.domain_id, s.label)
        views = len(config.image_keys) + config.empty_cameras
        if views > config.total_image_views:
            raise ValueError(f"{views} cameras do not fit the model's {config.total_image_views} view slots")
        self._log(describe(parts.sources, list(config.image_keys)))

    def _choose_trainable(self, parts: RunParts) -> None:
        """LoRA, which parameters train, gradient checkpointing, the device; logs the parameter table."""
        cfg, policy = self.cfg, parts.policy
        if parts.lora:
            n_layers = apply_lora(policy.model, cfg.lora)
            self._log(f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {n_layers} linear layers")
        parts.trainable = select_trainable(policy.model, "lora" if parts.lora else cfg.trainable)
        if parts.lora and self.checkpoints.resuming:
            self.checkpoints.restore_lora(policy)
        if cfg.gradient_checkpointing:
            _enable_gradient_checkpointing(policy)
        policy.to(self.env.device)
        policy.train()
        train_domains = sorted({s.domain_id for s in parts.sources})
        parts.keeper = DomainRowKeeper(policy.model, train_domains) if cfg.train_domain_rows_only else None
        freeze_steps = cfg.scheduler.freeze_steps
        scales = {g: cfg.optimizer.scale(g) for g in PARAM_GROUPS}
        table, parts.counts = count_table(policy.model, parts.trainable, freeze_steps, parts.keeper, scales)
        self._log(f"recipe '{cfg.recipe}': trainable parameters per group\n{table}")
        if 0 < freeze_steps >= cfg.steps:
            self._log(
                f"warning: scheduler.freeze_steps={freeze_steps} >= steps={cfg.steps}: only the soft prompts and the "
                "action heads will train (lower --scheduler.freeze_steps or raise --steps)"
            )

    def _build_optimizer(self, parts: RunParts) -> None:
        """Wrap for DDP/FSDP, build the optimizer and schedules, restore their state when resuming."""
        cfg, env, policy = self.cfg, self.env, parts.policy
        parts.bf16 = _use_bf16(cfg, parts.save_dtype, env.device)
        global_batch = cfg.batch_size * cfg.grad_accum_steps * env.world_size
        mode = "FSDP" if cfg.fsdp else "DDP" if env.distributed else "single"
        self._log(
            f"device {env.device} x {env.world_size} process(es), {mode}, {'bf16 autocast' if parts.bf16 else 'fp32'}; "
            f"batch {cfg.batch_size} x accum {cfg.grad_accum_steps} x {env.world_size} = {global_batch} samples/step; "
            f"steps {parts.start_step} -> {cfg.steps}; output {self.checkpoints.out}"
        )
        apply_requires_grad(policy.model, parts.trainable, parts.start_step, cfg.scheduler.freeze_steps)
        if cfg.compile:
            compile_for_training(policy.model)
        parts.module = TrainingModule(policy)
        if cfg.fsdp and env.distributed:
            dist_utils.shard_fsdp(policy, env, bf16=False)
            self._wrapped = parts.module
        else:
            self._wrapped = dist_utils.wrap_ddp(parts.module, env)
        # Fused AdamW (one kernel per step) for single-process runs; distributed runs keep the default so
        # DDP and FSDP (DTensor parameters) stay bit-identical to each other.
        fused = None if env.distributed else fused_adamw_supported(env.device)
        parts.optimizer = build_optimizer(policy.model, parts.trainable, cfg.optimizer, fused=fused)
        schedules = build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps)
        parts.scheduler = GroupLRScheduler(parts.optimizer, schedules, step=parts.start_step)
        if self.checkpoints.resuming:
            self.checkpoints.restore_optimizer(policy, parts.optimizer, parts.scheduler)

    def _build_loader(self, parts: RunParts) -> None:
        """The mixture, its sampler (resumed where the run stopped) and the loader; seeds each rank."""
        cfg, env, config = self.cfg, self.env, parts.policy.config
        dataset = MixtureDataset(
            parts.sources,
            list(config.image_keys),
            chunk_size=config.chunk_size,
            color_jitter_cfg=cfg.mixture.color_jitter,
            seed=cfg.seed,
        )
        sizes, weights = dataset.sizes, [s.config.weight for s in parts.sources]
        start_batch = parts.start_step * cfg.grad_accum_steps
        if self.checkpoints.resuming:
            start_batch = MixtureBatchSampler.start_batch_from_state(
                self.checkpoints.sampler_state(), cfg.batch_size, env.world_size, sizes, weights, cfg.seed
            )
        parts.sampler = MixtureBatchSampler(
            sizes, weights, cfg.batch_size, cfg.seed, env.rank, env.world_size, start_batch
        )
        collate = Collator(parts.policy.processor)
        parts.loader = build_loader(
            dataset,
            parts.sampler,
            collate,
            cfg.num_workers,
            cfg.prefetch_factor,
            pin_memory=env.device.type == "cuda",
            seed=cfg.seed,
        )
        if self.checkpoints.resuming:
            self.checkpoints.restore_rng()
        else:
            # Ranks draw different noise / times / dropout; the weights came from one seed.
            torch.manual_seed(cfg.seed + env.rank)

    def _train_and_write_outputs(self, parts: RunParts) -> TrainResult:
        cfg, env, out = self.cfg, self.env, self.checkpoints.out
        if env.is_main:
            cfg.save(out / TRAIN_CONFIG)
        resume_step = parts.start_step if self.checkpoints.resuming else None
        metrics = MetricsLogger(out, env.is_main, cfg.tensorboard, resume_step=resume_step)
        try:
            final_dir = self._loop(parts, metrics)
        finally:
            metrics.close()
        if env.is_main and cfg.plot:
            plot_metrics(out / METRICS_CSV, out / PLOT_NAME)
        if cfg.diagnostics:
            self._write_diagnostics(out, parts.policy)
        if cfg.trainable in ("domain", "lora") and final_dir is not None and env.is_main:
            lora_model = parts.policy.model if cfg.trainable == "lora" else None
            self._write_adapter(final_dir, out / ADAPTER_NAME, lora_model)
        return TrainResult(out, final_dir, cfg.steps, self.history, parts.counts, env.is_main)

    def _write_adapter(self, model_dir: Path, path: Path, lora_model: torch.nn.Module | None) -> None:
        """A prompt or LoRA run ends with its robot as an adapter file (its domain rows, the LoRA weights of a
        LoRA run under peft's names, and metadata)."""
        from ..adapters import export_adapter

        policy = XVLAPolicy.from_pretrained(model_dir, tokenizer=self.tokenizer)
        export_adapter(policy, policy.config.domain_id, path, lora_model=lora_model)
        self._log(
            f"adapter for domain {policy.config.domain_id}: {path} ({path.stat().st_size / 1024:.1f} KiB)"
        )

    # -------------------------------------------------------------- loop
    def _loop(self, parts: RunParts, metrics: MetricsLogger) -> Path | None:
        self.sigterm.armed = True
        try:
            return self._steps(parts, metrics)
        finally:
            self.sigterm.armed = False

    def _steps(self, parts: RunParts, metrics: MetricsLogger) -> Path | None:
        cfg = self.cfg
        progress = _progress(cfg.steps, parts.start_step, self.env.is_main)
        data_iter = iter(parts.loader)
        step, final_dir = parts.start_step, None
        interval = _Interval()
        params = [p for n, p in parts.policy.model.named_parameters() if parts.trainable.get(n, False)]
        while step < cfg.steps:
            self._unfreeze_if_due(parts, step)
            lrs = {g["name"]: g["lr"] for g in parts.optimizer.param_groups}
            sums = self._accumulate(data_iter, parts.bf16)
            if not bool(
                torch.isfinite(sums["loss"])
            ):  # stop before a NaN reaches the weights or a checkpoint
                raise FloatingPointError(
                    f"the loss is {float(sums['loss'])} at step {step + 1}: lower --optimizer.lr, check the data for "
                    "NaNs, or use --mixed_precision=no"
                )
            interval.add(sums, self._optimizer_step(parts, params))
            step += 1
            progress.update(1)
            if step % cfg.log_freq == 0 or step == cfg.steps:
                row = self._log_interval(interval, lrs, step, metrics)
                progress.set_postfix(
                    loss=f"{row['loss']:.4f}",
                    lr=f"{max(lrs.values()):.2e}",
                    sps=f"{row['samples_per_s']:.1f}",
                )
                interval = _Interval()
            last = step == cfg.steps
            if step % cfg.save_freq == 0 or (last and cfg.save_final) or self.sigterm.requested:
                final_dir = self.checkpoints.save(step, parts, final=last)
            if self.sigterm.requested and not last:
                raise KeyboardInterrupt  # the checkpoint of this step is complete; train() says how to resume
            if self.stop_at is not None and step >= self.stop_at and not last:
                break
        progress.close()
        return final_dir

    def _unfreeze_if_due(self, parts: RunParts, step: int) -> None:
        freeze_steps = self.cfg.scheduler.freeze_steps
        if freeze_steps <= 0 or step != freeze_steps:
            return
        if apply_requires_grad(parts.policy.model, parts.trainable, step, freeze_steps):
            self._log(f"step {step}: freeze period over, unfreezing the backbone groups")
            if not (self.cfg.fsdp and self.env.distributed) and self.env.distributed:
                # DDP registers the parameters that require grad when it is built: rebuild it
                # (dropping the old wrapper first, so its gradient hooks go with it).
                self._wrapped = None
                self._wrapped = dist_utils.wrap_ddp(parts.module, self.env)

    def _accumulate(self, data_iter, bf16: bool) -> dict[str, torch.Tensor]:
        """Forward and backward over ``grad_accum_steps`` micro-batches; the mean loss terms."""
        cfg, env = self.cfg, self.env
        accum, fsdp = cfg.grad_accum_steps, cfg.fsdp and env.distributed
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accum):
            batch = _next_batch(data_iter, stopping=lambda: self.sigterm.requested)
            if cfg.diagnostics:
                self.samples_seen += list(
                    zip(batch["mixture_index"].tolist(), batch["sample_index"].tolist(), strict=True)
                )
            batch = _move(batch, env.device)
            with dist_utils.no_sync(self._wrapped, env.distributed and not fsdp and micro < accum - 1):
                with _autocast(env.device, bf16):
                    total, terms = self._wrapped(batch)
                (total / accum).backward()
            for k, v in terms.items():
                sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + v.detach().float() / accum
            sums["loss"] = sums.get("loss", 0.0) + total.detach().float() / accum
        return sums

    def _optimizer_step(self, parts: RunParts, params: list[torch.Tensor]) -> torch.Tensor:
        """Clip, step, restore frozen domain rows, advance the schedule; returns the gradient norm."""
        if parts.keeper is not None:
            parts.keeper.mask_gradients()
        with_grad = [p for p in params if p.grad is not None]
        clip = self.cfg.optimizer.grad_clip_norm
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(with_grad, clip if clip > 0 else float("inf"))
            if with_grad
            else torch.zeros(())
        )
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        parts.optimizer.step()
        if parts.keeper is not None:
            parts.keeper.restore()
        parts.optimizer.zero_grad(set_to_none=True)
        parts.scheduler.step()
        return grad_norm

    def _log_interval(
        self, interval: _Interval, lrs: dict[str, float], step: int, metrics: MetricsLogger
    ) -> dict:
        cfg, env = self.cfg, self.env
        keys = sorted(interval.sums)
        values = (
            torch.stack([torch.as_tensor(interval.sums[k], device=env.device).float() for k in keys])
            / interval.steps
        )
        row = dict(zip(keys, dist_utils.all_reduce_mean(env, values).tolist(), strict=True))
        elapsed = time.perf_counter() - interval.start
        row["samples_per_s"] = (
            interval.steps * cfg.batch_size * cfg.grad_accum_steps * env.world_size / max(elapsed, 1e-9)
        )
        row.update({f"lr/{name}": lr for name, lr in lrs.items()})
        metrics.log(step, row)
        self.history.append({"step": step, **row})
        return row

    # -------------------------------------------------------------- diagnostics
    def _write_diagnostics(self, out: Path, policy: XVLAPolicy) -> None:
        cfg, env = self.cfg, self.env
        if cfg.fsdp and env.distributed:
            state = self.checkpoints.model_state(policy)  # collective; only rank 0 gets the weights
            checksum = _checksum(state) if state else None
        else:
            checksum = _checksum(policy.model.state_dict())
        data = {
            "rank": env.rank,
            "world_size": env.world_size,
            "checksum": checksum,
            "samples": self.samples_seen,
        }
        write_json(out / f"diagnostics_rank{env.rank}.json", data)


def _next_batch(data_iter, stopping=lambda: False) -> dict[str, Any]:
    """The next batch; a loader worker's error comes back as one line, a damaged video with the way around it.
    After SIGTERM (``stopping()``, asked once the error is here: the workers die of the same signal, and the
    error can come before the handler has run) a loader whose workers are gone ends the run as an interrupt."""
    from ..data.video import FrameTimestampError, VideoDecodeError

    try:
        return next(data_iter)
    except Exception as exc:
        if stopping():
            raise KeyboardInterrupt from None
        plain = unwrap_worker_error(exc)
        if isinstance(exc, (VideoDecodeError, FrameTimestampError)):
            raise type(plain)(
                f"{plain}; --mixture.skip_bad_episodes leaves out the episodes whose video does not decode"
            ) from None
        if plain is exc:
            raise
        raise plain from None


def _checksum(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name, p in sorted(state.items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def lr_table(schedules, cfg: TrainConfig, present: list[str]) -> str:
    """The learning rate of each group at the steps where the schedule changes shape."""
    sc = cfg.scheduler
    marks = {0, 1, cfg.steps // 2, cfg.steps - 1}
    for s in schedules.values():
        marks |= {s.start, s.start + s.warmup - 1, s.start + s.warmup}
    steps = sorted(m for m in marks if 0 <= m < cfg.steps)
    lines = [
        f"learning rate per group (freeze_steps={sc.freeze_steps}, warm-up={sc.warmup_steps}, "
        f"{sc.type} to {sc.min_lr_ratio:g}x); '-' = group has nothing to train",
        f"{'step':>8}" + "".join(f"{g:>18}" for g in PARAM_GROUPS),
    ]
    for step in steps:
        cells = [f"{schedules[g].lr(step):>18.3e}" if g in present else f"{'-':>18}" for g in PARAM_GROUPS]
        lines.append(f"{step:>8}" + "".join(cells))
    return "\n".join(lines)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def train(cfg: TrainConfig, tokenizer: Any = None, stop_at: int | None = None) -> TrainResult:
    """Run training as configured; returns where the checkpoints went and the logged metrics.

    ``stop_at`` ends the run after that step without a final checkpoint, as an interruption would.
    """
    return Trainer(cfg, tokenizer=tokenizer, stop_at=stop_at).train()
