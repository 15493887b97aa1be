"""ServeEngine: one loaded policy, validated observations -> model tensors -> batched action chunks.

The engine owns everything model-side of the server and nothing HTTP-side:

- :meth:`ServeEngine.prepare` turns one validated :class:`~xvla.serve.protocol.Observation` into
  per-sample tensors through the policy's own processor (``policy.processor``, the one path that
  ``predict_action_chunk``, training and the simulators use), and draws that sample's initial noise;
- :meth:`ServeEngine.run` concatenates samples that share a batch key (denoising steps and view
  count) and calls :meth:`XVLAPolicy.generate` once.

Because every sample carries its own noise and the model has no cross-sample interaction, a
sample's actions do not depend on what it was batched with (up to float rounding).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..domains import check_domain_ids, trained_domains
from ..policy import XVLAPolicy
from ..processor import IMAGE_PREFIX, MODEL_INPUTS, STATE_KEY
from ..utils import resolve_device
from .protocol import Limits, ModelSpec, Observation, RequestError

logger = logging.getLogger("xvla.serve")

NON_FINITE = RequestError(
    "observation",
    "the model produced NaN or infinite actions for this observation; check that the state and images are in "
    "the ranges the checkpoint was trained on",
)
MAX_VIEWS = 8  # hard cap on views per sample, whatever the sequence length would allow


@dataclass
class Sample:
    """Model inputs of one observation (batch dimension 1, on the CPU)."""

    input_ids: torch.Tensor  # [1, L]
    image_input: torch.Tensor  # [1, V, 3, H, W]
    image_mask: torch.Tensor  # [1, V]
    domain_id: torch.Tensor  # [1]
    proprio: torch.Tensor  # [1, P]
    noise: torch.Tensor  # [1, chunk, model action dim] float32
    steps: int
    prefix: torch.Tensor | None = None  # [1, chunk, action dim]: committed actions, zero-padded to the chunk
    prefix_weights: torch.Tensor | None = None  # [1, chunk]: zero beyond the committed actions
    guidance: str = "inpaint"
    action_space: str = ""  # the robot's action space: a committed prefix is mapped back through it

    @property
    def batch_key(self) -> tuple:
        """Samples with equal keys can share one forward pass (a committed prefix adds its guidance mode and
        action space; without one, robots of different action spaces share a pass)."""
        base = (self.steps, int(self.image_input.shape[1]))
        return base if self.prefix is None else (*base, self.guidance, self.action_space)


class ServeEngine:
    def __init__(
        self,
        policy: XVLAPolicy,
        *,
        checkpoint: str | None = None,
        default_steps: int | None = None,
        domain_ids: list[int] | None = None,
        seed: int | None = None,
        limits: Limits | None = None,
        encoded_channel_order: str = "rgb",
    ):
        self.policy = policy.eval()
        self.model = policy.model
        self.config = policy.config
        self.checkpoint = checkpoint
        cfg = self.config
        if encoded_channel_order not in ("rgb", "bgr"):
            raise ValueError(
                f"encoded_channel_order={encoded_channel_order!r} is invalid: choose 'rgb' or 'bgr'"
            )
        self.limits = limits or Limits()
        steps = int(default_steps or cfg.num_denoising_steps)
        if not 1 <= steps <= self.limits.max_steps:
            raise ValueError(
                f"steps={steps} is invalid: it must be in [1, max_steps={self.limits.max_steps}]"
            )
        allowed = served_domains(cfg, domain_ids)
        self.processor = policy.processor
        self._noise_lock = threading.Lock()
        # Adapters load (POST /v1/adapters) while the batcher runs chunks: a LoRA merge rewrites the shared
        # backbone, so the two never overlap. Re-entrant: load_adapter warms compiled graphs through run().
        self._model_lock = threading.RLock()
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(int(seed))
        self.tokenizer = policy.tokenizer  # load now: a missing tokenizer fails at start-up, not per request
        self.image_size = self.processor.image_size
        self.spec = self._model_spec(allowed, steps, encoded_channel_order)

    def _model_spec(self, allowed: list[int], steps: int, encoded_channel_order: str) -> ModelSpec:
        """What requests are validated against: widths, views, served domains, limits."""
        cfg = self.config
        return ModelSpec(
            proprio_dim=cfg.proprio_dim,
            use_proprio=cfg.use_proprio,
            num_domains=cfg.num_domains,
            allowed_domains=frozenset(allowed),
            default_domain_id=cfg.domain_id,
            max_views=self._max_views(),
            chunk_size=cfg.chunk_size,
            model_action_dim=self.model.dim_action,
            default_steps=steps,
            image_keys=tuple(cfg.image_keys) if cfg.image_keys else None,
            encoded_channel_order=encoded_channel_order,
            limits=self.limits,
            action_dim=self.model.real_action_dim,
            robots=robot_table(cfg),
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | None = "auto",
        dtype: str | None = None,
        compile: bool | None = None,
        compile_batch_sizes: tuple[int, ...] | None = None,
        quantize: str | None = None,
        fast: bool = False,
        **kwargs: Any,
    ) -> ServeEngine:
        """``compile=True``: the fast path (:mod:`xvla.model.compiled_runner`); :meth:`warmup` then compiles every
        batch size.
        ``fast=True``: the fastest correct setting for this machine (:func:`xvla.hardware.choose`)."""
        dev = resolve_device(device)
        overrides = {"dtype": dtype} if dtype else {}
        policy = XVLAPolicy.from_pretrained(
            path,
            device=dev,
            compile=compile,
            compile_batch_sizes=compile_batch_sizes,
            quantize=quantize,
            fast=fast,
            **overrides,
        )
        return cls(policy, checkpoint=str(path), **kwargs)

    def load_adapter(self, path: str | Path, name: str | None = None) -> Any:
        """Load a robot adapter into a free domain slot and serve it (requests pick it by ``robot`` or id).

        Waits for the chunk in progress; chunks wait for the load (and, compiled, the new graphs)."""
        with self._model_lock:
            info = self.policy.load_adapter(path, name=name)
            widths = tuple(
                (a.domain_id, self.model.action_widths([a.domain_id])[0])
                for a in self.policy.adapters.values()
            )
            self.spec = dataclasses.replace(
                self.spec,
                allowed_domains=self.spec.allowed_domains | {info.domain_id},
                robots=robot_table(self.config),
                domain_action_dims=widths,
            )
            logger.info("adapter %r (%s) serves as domain %d", info.name, path, info.domain_id)
            if self.model.runner is not None:  # the new weights need new frozen graphs: build them now
                self.warmup()
        return info

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.model.device

    def _max_views(self) -> int:
        """How many camera views a request may send: what fits in max_len_seq, less the padded empty slots."""
        cfg = self.config
        capacity = self.model.view_capacity(self.image_size)
        if capacity < cfg.total_image_views:
            raise ValueError(
                f"this checkpoint cannot run: its {cfg.total_image_views} camera views of "
                f"{self.image_size[0]}x{self.image_size[1]} ({self.model.image_tokens(self.image_size)} tokens each) "
                f"plus chunk_size={cfg.chunk_size} and tokenizer_max_length={cfg.tokenizer_max_length} exceed "
                f"max_len_seq={cfg.max_len_seq}"
            )
        return min(MAX_VIEWS, capacity) - cfg.empty_cameras

    # ------------------------------------------------------------------ per-sample preparation
    def prepare(self, obs: Observation) -> Sample:
        """Validated observation -> model inputs (CPU tensors) through the policy's processor."""
        inputs = self.processor(self.observation_dict(obs))
        space = self.model.space_for(obs.domain_id)
        return Sample(
            **inputs,
            noise=self.draw_noise(obs),
            steps=obs.steps,
            **self.prefix_fields(obs),
            action_space=f"{space.name}/{space.real_dim}",
        )

    def observation_dict(self, obs: Observation) -> dict[str, Any]:
        """The request as the LeRobot-form observation the processor reads (views in the order sent)."""
        keys = list(self.config.image_keys or [f"{IMAGE_PREFIX}view{i}" for i in range(len(obs.images))])
        frames: list[Any] = list(obs.images) + [None] * (len(keys) - len(obs.images))
        out: dict[str, Any] = dict(zip(keys, frames, strict=True))
        out.update({"task": obs.task, "domain_id": obs.domain_id})
        if obs.state is not None:
            out[STATE_KEY] = obs.state
        return out

    def prefix_fields(self, obs: Observation) -> dict[str, Any]:
        """A committed prefix as fixed-size tensors, so samples with different prefix lengths batch together."""
        if obs.prefix is None:
            return {}
        length, width = obs.prefix.shape
        prefix = torch.zeros(1, self.config.chunk_size, width)
        weights = torch.zeros(1, self.config.chunk_size)
        prefix[0, :length] = torch.from_numpy(obs.prefix)
        weights[0, :length] = torch.from_numpy(obs.prefix_weights)
        return {"prefix": prefix, "prefix_weights": weights, "guidance": obs.guidance}

    def noise_shape(self, batch: int = 1) -> tuple[int, int, int]:
        return (batch, self.config.chunk_size, self.model.dim_action)

    def draw_noise(self, obs: Observation) -> torch.Tensor:
        """Explicit noise, else ``randn`` from a CPU generator seeded with the request's seed, else the server's."""
        if obs.noise is not None:
            return torch.from_numpy(np.ascontiguousarray(obs.noise, dtype=np.float32)).reshape(
                self.noise_shape()
            )
        if obs.seed is not None:
            return torch.randn(self.noise_shape(), generator=torch.Generator().manual_seed(obs.seed))
        with self._noise_lock:
            return torch.randn(self.noise_shape(), generator=self._generator)

    # ------------------------------------------------------------------ batched inference
    def run(self, samples: list[Sample]) -> list[np.ndarray | RequestError]:
        """One forward pass over samples sharing a batch key -> one [chunk, action dim] array each.

        A sample whose chunk is not finite (an input far outside what the model knows) gets a
        :class:`RequestError` instead; samples do not interact, so the others are unaffected.
        """
        keys = {s.batch_key for s in samples}
        if len(keys) != 1:
            raise ValueError(f"samples with different batch keys {sorted(keys)} cannot share a forward pass")
        dev = self.device

        def cat(name: str) -> torch.Tensor:
            return torch.cat([getattr(s, name) for s in samples]).to(dev, non_blocking=True)

        with self._model_lock, torch.inference_mode():
            inputs = {name: cat(name) for name in MODEL_INPUTS}
            constraint = (
                {}
                if samples[0].prefix is None
                else {
                    "prefix": cat("prefix"),
                    "prefix_weights": cat("prefix_weights"),
                    "guidance": samples[0].guidance,
                }
            )
            actions = self.policy.generate(inputs, noise=cat("noise"), steps=samples[0].steps, **constraint)
        widths = self.model.action_widths(cat("domain_id"))  # robots of different widths share the pass
        out = [a[:, :w] for a, w in zip(actions.cpu().numpy(), widths, strict=True)]
        return [a if np.isfinite(a).all() else NON_FINITE for a in out]

    def _dummy_observation(self, steps: int) -> Observation:
        height, width = self.image_size
        cfg = self.config
        return Observation(
            images=[np.zeros((height, width, 3), dtype=np.uint8)],
            state=np.zeros(cfg.proprio_dim, dtype=np.float32) if cfg.use_proprio else None,
            task="warm up",
            domain_id=min(self.spec.allowed_domains),
            steps=steps,
            seed=0,
        )

    def warmup(self) -> float:
        """Compile every batch size (fast path) and run one 1-step chunk to check the model end to end;
        returns the seconds taken. What a request costs is :meth:`chunk_seconds`."""
        start = time.perf_counter()
        runner = self.model.runner
        if runner is not None:  # compile every batch size now, so no request waits for a compile
            runner.warmup(views=self.config.total_image_views, image_size=self.image_size)
        (result,) = self.run([self.prepare(self._dummy_observation(steps=1))])
        if not isinstance(result, np.ndarray):
            raise RuntimeError("the warm-up chunk is NaN or infinite: the checkpoint's weights look broken")
        return time.perf_counter() - start

    def chunk_seconds(self, batch_sizes: tuple[int, ...] = (1,)) -> dict[int, float]:
        """Seconds one forward pass takes at each batch size, at the default denoising steps: what a
        request waits for (after :meth:`warmup`, so no compile is counted)."""
        sample = self.prepare(self._dummy_observation(steps=self.spec.default_steps))
        times = {}
        for batch in batch_sizes:
            start = time.perf_counter()
            self.run([sample] * batch)
            times[batch] = time.perf_counter() - start
        return times

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        from .. import __version__

        cfg = self.config
        return {
            "name": "xvla",
            "version": __version__,
            "checkpoint": self.checkpoint,
            "checkpoint_format": getattr(self.policy, "checkpoint_format", None),
            "action_mode": cfg.action_mode,
            "action_dim": self.model.real_action_dim,
            "model_action_dim": self.model.dim_action,
            "chunk_size": cfg.chunk_size,
            "n_action_steps": cfg.n_action_steps,
            "proprio_dim": cfg.proprio_dim,
            "use_proprio": cfg.use_proprio,
            "num_domains": cfg.num_domains,
            "domain_ids": sorted(self.spec.allowed_domains),
            "default_domain_id": cfg.domain_id,
            "robots": dict(self.spec.robots),
            "adapters": [
                {
                    "name": a.name,
                    "domain_id": a.domain_id,
                    "path": a.path,
                    "action_mode": a.metadata.get("action_mode"),
                    "action_dim": self.spec.action_dim_for(a.domain_id),
                }
                for a in self.policy.adapters.values()
            ],
            "views": {
                "configured": cfg.total_image_views,
                "max_images": self.spec.max_views,
                "image_keys": list(cfg.image_keys) if cfg.image_keys else None,
                "empty_cameras": cfg.empty_cameras,
                "image_size": list(self.image_size),
            },
            "denoising_steps": self.spec.default_steps,
            "max_steps": self.limits.max_steps,
            "tokenizer_max_length": cfg.tokenizer_max_length,
            "device": str(self.device),
            "dtype": cfg.dtype,
            "encoded_image_channel_order": self.spec.encoded_channel_order,
        }


def robot_table(config: Any) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((name, d) for d, name in (config.domains or {}).items()))


def served_domains(config: Any, requested: list[int] | None) -> list[int]:
    """Domain ids requests may use: ``--domain-ids`` when given, else the checkpoint's trained domains
    (every id for a checkpoint that records no domain table, such as the released base models)."""
    if requested:
        check_domain_ids(requested, config.num_domains, "--domain-ids:")
        return sorted(set(int(d) for d in requested))
    if config.domains:
        return sorted(trained_domains(config))
    return list(range(config.num_domains))
