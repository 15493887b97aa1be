"""The compiled runner, the fast inference path: compiled graphs with frozen weights, static shapes but
for the batch.

    policy = XVLAPolicy.from_pretrained(path, dtype="bfloat16", compile=True)
    policy.model.runner.warmup(views=2, image_size=(224, 224))   # optional: compile every batch size now

:func:`compile_for_inference` gives an :class:`~xvla.model.XVLAModel` a :class:`CompiledRunner` (``model.runner``);
the model's ``encode`` and ``denoise_step`` run through it at inference (``model.runner = None``: eager):

- The per-chunk encoding (every camera view, the text encoder and the context projections) and one
  denoising step become two ``torch.compile`` graphs. On CPU, inductor runs with ``freezing=True``:
  weights are constants of the graph, pre-packed for oneDNN (AMX tiles in bf16), and LayerNorm, GELU,
  residual adds and the timestep embedding are fused into a few C++ kernels. On CUDA the default mode is
  ``"reduce-overhead"``: the step is replayed as a CUDA graph, since a GPU is launch-bound on this loop.
- Nothing recompiles while serving: every view is encoded (a missing view is zeroed afterwards, exactly
  as the eager path leaves it), and batches run in slices of at most the largest of ``batch_sizes``.
- With frozen bf16 weights (CPU, the fast path) the batch dimension is symbolic from 2 up: each frozen
  graph holds its own prepacked copy of the weights, so one graph per size meant one more copy of the
  model per warmed size. One graph serves every size >= 2 and one serves batch 1 (which dynamo always
  specializes); a symbolic batch measured as fast as per-size graphs. A batch runs at its own size, so
  ``batch_sizes`` only sets the largest slice and what ``warmup`` compiles.
- fp32 weights keep a graph per warmed size (each a prepacked copy of the weights; bound it with
  ``batch_sizes``): inductor packs fp32 linears for MKL only at a static batch, and with a symbolic one it
  calls oneDNN's fp32 linear, which measured slower at the released size.
- Graphs per size (fp32 on CPU, CUDA graphs): a batch is padded up to the next of ``batch_sizes`` (or a
  multiple of the largest). Padding rows repeat sample 0 and are dropped; samples never interact, so a sample's
  actions do not depend on the padding.
- Under autograd, or in training mode, the model runs eagerly instead: frozen weights would be stale.
- The graphs freeze the weights (prepacked copies of the linears): after changing weights in place, call
  :meth:`CompiledRunner.weights_changed` (``XVLAPolicy.load_adapter`` does) and the graphs are rebuilt lazily.

Compiled kernels are cached on disk by inductor (``TORCHINDUCTOR_CACHE_DIR``, default
``/tmp/torchinductor_<user>``): the first compile on a machine is paid once, later processes load it.
Measurements behind these choices: docs/benchmarks.md ("Fast path").
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from ..hardware import probe
from .transformer import Context

if TYPE_CHECKING:
    from .xvla import XVLAModel

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
# Every CompiledRunner, and every weight change, gets a fresh number: dynamo's cache belongs to the function's
# code, shared by all runners, and a graph frozen with other weights must never match.
_WEIGHTS_VERSIONS = itertools.count()


def check_compile_supported(device: torch.device) -> None:
    """Fail early, in one line naming the fix, where inductor cannot build kernels."""
    if device.type == "cpu":
        if not probe().cxx:
            raise ValueError(
                "compile=True needs a C++ compiler for inductor's CPU kernels and none was found: "
                "install one (e.g. `apt-get install g++`) or load the policy with compile=False"
            )
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                "compile=True on CUDA needs triton (`pip install triton`, matching your torch), "
                "or load the policy with compile=False"
            ) from exc
    else:
        raise ValueError(f"compile=True is supported on cpu and cuda, not {device.type}; use compile=False")


def inductor_config(device: torch.device, mode: str | None) -> dict[str, object]:
    """Inductor settings patched around each compiled call (they must hold when a graph compiles, lazily).

    - ``freezing``: weights become constants, linears are prepacked for oneDNN (AMX tiles in bf16).
      Passing it as ``torch.compile(options=...)`` left them unpacked (``aten.addmm``) in torch 2.13.
    - CPU only: a kernel runs on one thread unless each thread gets >= 64k elements, and the graph's
      wrapper is C++. With ``OMP_WAIT_POLICY=PASSIVE`` every parallel region and barrier wakes sleeping
      threads, which costs more than a LayerNorm of one sample does, so small kernels are faster on one
      thread; this matters most at batch 1 (docs/benchmarks.md, "Fast path").
    """
    config: dict[str, object] = {"freezing": mode != "reduce-overhead"}
    if device.type == "cpu":
        config.update({"cpp_wrapper": True, "cpp.min_chunk_size": 1 << 16})
    return config


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pad dim 0 to ``size`` rows by repeating row 0 (a valid sample, so no NaN can appear)."""
    extra = size - x.shape[0]
    if extra <= 0:
        return x
    return torch.cat([x, x[:1].expand(extra, *x.shape[1:])])


def static_encode(
    model: XVLAModel,
    input_ids: torch.Tensor,
    image_input: torch.Tensor,
    image_mask: torch.Tensor,
    domain_id: torch.Tensor,
    num_actions: int,
) -> torch.Tensor:
    """``model.encode(...).tokens`` with shapes that do not depend on which views are present.

    Every view goes through the vision tower and missing ones are multiplied by 0, which leaves the
    zeros the eager path writes there; the compiled and exported graphs are built from this.
    """
    batch, views = image_input.shape[:2]
    features = model.vlm.encode_images(image_input.flatten(0, 1).to(model.dtype))
    features = features * image_mask.reshape(-1, 1, 1).to(features.dtype)
    enc = model.vlm.fuse(features.view(batch, views, *features.shape[1:]), input_ids)
    context = model.transformer.encode_context(
        enc["vlm_features"], enc["aux_visual_inputs"], domain_id, num_actions
    )
    return context.tokens


class CompiledRunner:
    """Owns the two compiled graphs of one model and the batch sizes they are used at."""

    def __init__(self, model: XVLAModel, batch_sizes: Sequence[int], mode: str | None, backend: str):
        if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
            raise ValueError(f"batch_sizes={list(batch_sizes)} is invalid: give one or more sizes >= 1")
        self.model = model
        self.batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        self.mode = mode
        self.backend = backend
        self.weights_version = next(_WEIGHTS_VERSIONS)
        self._inductor_config = inductor_config(model.device, mode)
        self._symbolic_batch = bool(self._inductor_config["freezing"]) and model.dtype != torch.float32
        kwargs = {"mode": mode} if mode else {}
        self._encode_graph = torch.compile(self._static_encode, backend=backend, dynamic=False, **kwargs)
        self._denoise_graph = torch.compile(self._static_denoise, backend=backend, dynamic=False, **kwargs)

    # ------------------------------------------------------------------ the compiled functions
    def _static_encode(self, input_ids, image_input, image_mask, domain_id, num_actions: int) -> torch.Tensor:
        self._guard_weights_version()
        return static_encode(self.model, input_ids, image_input, image_mask, domain_id, num_actions)

    def _static_denoise(self, tokens, domain_id, x_t, proprio, t) -> torch.Tensor:
        self._guard_weights_version()
        return self.model.denoise_step_eager(Context(tokens=tokens, domain_id=domain_id), x_t, proprio, t)

    def _guard_weights_version(self) -> None:
        # Read while tracing, so dynamo guards on the value: after weights_changed() every graph is traced
        # (and frozen) again. Frozen graphs hold copies of prepacked weights, which in-place updates miss.
        if self.weights_version < 0:
            raise AssertionError("weights_version is never negative")

    def weights_changed(self) -> None:
        """Call after changing the model's weights in place (an adapter, a LoRA merge): recompiles lazily."""
        self.weights_version = next(_WEIGHTS_VERSIONS)

    # ------------------------------------------------------------------ batching
    def padded_size(self, batch: int) -> int:
        """The size a batch runs at, in slices of at most the largest warmed size.

        With a symbolic batch (bf16 on CPU) every size from 2 up has its graph already, so only a lone row
        left over is padded (to 2 rows) when batch 1 was not warmed. Otherwise (a graph per size): the next
        warmed size, or a multiple of the largest one.
        """
        largest = self.batch_sizes[-1]
        if self._symbolic_batch:
            lone_row = batch % largest == 1 and 1 not in self.batch_sizes
            return batch + 1 if lone_row else batch
        if batch > largest:
            return -(-batch // largest) * largest
        return next(b for b in self.batch_sizes if b >= batch)

    def _run(self, graph: Callable[..., torch.Tensor], tensors: list[torch.Tensor], *extra) -> torch.Tensor:
        padded = self.padded_size(tensors[0].shape[0])
        tensors = [_pad_rows(x, padded) for x in tensors]
        step = min(padded, self.batch_sizes[-1])
        outs = []
        for start in range(0, padded, step):
            if self.mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            inputs = [x[start : start + step] for x in tensors]
            if self._symbolic_batch and inputs[0].shape[0] > 1:
                for x in inputs:
                    torch._dynamo.mark_dynamic(x, 0)
            with torch._inductor.config.patch(self._inductor_config):
                out = graph(*inputs, *extra)
            # CUDA graphs reuse their output buffers on the next replay: keep a private copy.
            outs.append(out.clone() if self.mode == "reduce-overhead" else out)
        return torch.cat(outs) if len(outs) > 1 else outs[0]

    # ------------------------------------------------------------------ what XVLAModel calls
    def active(self) -> bool:
        """Whether the graphs may run now: not under autograd or in training mode, where frozen weights are stale."""
        return not (torch.is_grad_enabled() or self.model.training)

    def encode(
        self, input_ids, image_input, image_mask, domain_id, num_actions: int | None = None
    ) -> Context:
        if not bool(image_mask[:, 0].all()):
            raise ValueError(
                "image_mask[:, 0] must be True: view 0 (the main camera) is required for every sample"
            )
        num_actions = num_actions or self.model.chunk_size
        tokens = self._run(self._encode_graph, [input_ids, image_input, image_mask, domain_id], num_actions)
        return Context(tokens=tokens, domain_id=_pad_rows(domain_id, tokens.shape[0]))

    def denoise_step(
        self, context: Context, x_t: torch.Tensor, proprio: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        batch = x_t.shape[0]
        tensors = [context.tokens, context.domain_id, x_t, proprio, t]
        return self._run(self._denoise_graph, tensors)[:batch]

    # ------------------------------------------------------------------ warm-up
    def warmup(
        self,
        views: int,
        image_size: tuple[int, int],
        text_length: int | None = None,
        batch_sizes: Sequence[int] | None = None,
    ) -> float:
        """Run every warmed batch size once now, compiling (or loading from the cache) the graphs they use
        (bf16 on CPU: one for batch 1, one for all sizes from 2 up; else one per size); returns the seconds it took."""
        model = self.model
        length = int(text_length or model.config.tokenizer_max_length)
        height, width = image_size
        device = model.device
        start = time.perf_counter()
        for batch in batch_sizes or self.batch_sizes:
            inputs = dict(
                input_ids=torch.ones(batch, length, dtype=torch.long, device=device),
                image_input=torch.zeros(batch, views, 3, height, width, device=device),
                image_mask=torch.ones(batch, views, dtype=torch.bool, device=device),
                domain_id=torch.zeros(batch, dtype=torch.long, device=device),
                proprio=torch.zeros(batch, model.dim_proprio, device=device),
            )
            with torch.inference_mode():
                model.generate_actions(**inputs, steps=2)
        seconds = time.perf_counter() - start
        logger.info(
            "fast path warmed for batch sizes %s in %.1fs", list(batch_sizes or self.batch_sizes), seconds
        )
        return seconds

    def disable(self) -> None:
        """Back to eager inference (e.g. before training the same model again)."""
        if self.model.runner is self:
            self.model.runner = None


def compile_for_inference(
    model: XVLAModel,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    mode: str | None = None,
    backend: str = "inductor",
) -> CompiledRunner:
    """Give ``model`` a runner that its ``encode`` / ``denoise_step`` go through: compiled static-shape graphs.

    Call it after the weights are loaded and the model is on its device and dtype (the CPU graphs
    freeze the weights). ``mode`` defaults to ``"reduce-overhead"`` (CUDA graphs) on CUDA and to
    inductor with freezing on CPU. Compilation happens lazily per batch size, or in
    :meth:`CompiledRunner.warmup`.
    """
    device = model.device
    if backend == "inductor":
        check_compile_supported(device)
    if mode is None and device.type == "cuda":
        mode = "reduce-overhead"
    # One graph per (batch size, view count, image size) for each of the two functions: the default limit
    # of 8 per function would send a server with 4 sizes x 3 view counts back to eager after the 8th.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    model.runner = CompiledRunner(model, batch_sizes, mode, backend)
    return model.runner
