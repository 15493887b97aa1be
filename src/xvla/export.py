"""ONNX export: the per-chunk encoder and one denoising step, with a dynamic batch dimension.

    xvla export CHECKPOINT OUT --format onnx          # writes OUT/encoder.onnx, OUT/denoise_step.onnx

Two graphs rather than one sampler, so that the number of denoising steps stays a run-time choice:

- ``encoder.onnx``: ``input_ids [B, L] int64, image_input [B, V, 3, H, W] float32, image_mask [B, V] bool,
  domain_id [B] int64 -> context [B, S, H]`` (every view is encoded; missing views are zeroed, see
  :func:`xvla.model.compiled_runner.static_encode`);
- ``denoise_step.onnx``: ``context, domain_id, x_t [B, T, D], proprio [B, P], t [B] -> action [B, T, D]``
  (the network's clean-action prediction, before the action space's postprocess).

:class:`OnnxSampler` runs the flow-matching loop over the two graphs with onnxruntime or OpenVINO; ``export.json``
beside them records the shapes and the action space so the loop can be rebuilt in any language.
TensorRT engines are built from these files (docs/export.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .config import settle_image_size
from .model.compiled_runner import static_encode
from .model.transformer import Context

if TYPE_CHECKING:
    from .model.xvla import XVLAModel

ENCODER_INPUTS = ("input_ids", "image_input", "image_mask", "domain_id")
STEP_INPUTS = ("context", "domain_id", "x_t", "proprio", "t")


def require_onnx() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'xvla[export]'")


class EncoderGraph(nn.Module):
    def __init__(self, model: XVLAModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, image_input, image_mask, domain_id):
        return static_encode(self.model, input_ids, image_input, image_mask, domain_id, self.model.chunk_size)


class StepGraph(nn.Module):
    def __init__(self, model: XVLAModel):
        super().__init__()
        self.model = model

    def forward(self, context, domain_id, x_t, proprio, t):
        # Eager: the exported graph is traced from the modules, never from a compiled runner's graphs.
        return self.model.denoise_step_eager(Context(tokens=context, domain_id=domain_id), x_t, proprio, t)


def example_inputs(
    model: XVLAModel, batch: int, views: int, image_size: tuple[int, int]
) -> dict[str, torch.Tensor]:
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    height, width = image_size
    return {
        "input_ids": torch.randint(
            3,
            model.vlm.language_model.shared.num_embeddings,
            (batch, cfg.tokenizer_max_length),
            generator=gen,
        ),
        "image_input": torch.randn(batch, views, 3, height, width, generator=gen),
        "image_mask": torch.ones(batch, views, dtype=torch.bool),
        "domain_id": torch.arange(batch) % cfg.num_domains,
        "proprio": torch.randn(batch, model.dim_proprio, generator=gen),
        "noise": torch.randn(batch, cfg.chunk_size, model.dim_action, generator=gen),
    }


def _export(
    module: nn.Module, args: tuple, names: tuple[str, ...], output: str, path: Path, opset: int
) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = {name: {0: batch} for name in names}
    program = torch.onnx.export(
        module,
        args,
        dynamo=True,
        input_names=list(names),
        output_names=[output],
        dynamic_shapes=shapes,
        opset_version=opset,
        external_data=False,
    )
    program.save(str(path))


def export_onnx(
    model: XVLAModel,
    out_dir: str | Path,
    views: int | None = None,
    image_size: tuple[int, int] | None = None,
    opset: int = 18,
) -> dict[str, Any]:
    """Write encoder.onnx, denoise_step.onnx and export.json to ``out_dir`` (fp32 graphs)."""
    require_onnx()
    model = model.float().eval()
    cfg = model.config
    views = views or cfg.total_image_views
    image_size = tuple(image_size or settle_image_size(cfg, warn=False))  # the size the processor feeds
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(model, 2, views, image_size)
    with torch.no_grad():
        encoder_args = tuple(ex[k] for k in ENCODER_INPUTS)
        context = EncoderGraph(model)(*encoder_args)
        _export(
            EncoderGraph(model).eval(), encoder_args, ENCODER_INPUTS, "context", out / "encoder.onnx", opset
        )
        t = torch.ones(2)
        step_args = (context, ex["domain_id"], ex["noise"], ex["proprio"], t)
        _export(StepGraph(model).eval(), step_args, STEP_INPUTS, "action", out / "denoise_step.onnx", opset)
    meta = {
        "format": "xvla-onnx/1",
        "views": views,
        "image_size": list(image_size),
        "text_length": cfg.tokenizer_max_length,
        "chunk_size": cfg.chunk_size,
        "model_action_dim": model.dim_action,
        "proprio_dim": model.dim_proprio,
        "action_mode": cfg.action_mode,
        "real_action_dim": model.real_action_dim,
        "num_denoising_steps": cfg.num_denoising_steps,
        "context_shape": list(context.shape[1:]),
        "opset": opset,
    }
    (out / "export.json").write_text(json.dumps(meta, indent=2))
    return meta


RUNTIMES = ("onnxruntime", "openvino")


def _onnxruntime_graphs(folder: Path, providers: list[str] | None, threads: int | None) -> list[Callable]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions = [
        ort.InferenceSession(str(folder / name), options, providers=providers or ["CPUExecutionProvider"])
        for name in ("encoder.onnx", "denoise_step.onnx")
    ]
    return [lambda feed, s=session: s.run(None, feed)[0] for session in sessions]


def _openvino_graphs(folder: Path, precision: str, threads: int | None) -> list[Callable]:
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError(
            "runtime='openvino' needs OpenVINO: `pip install openvino` (or 'xvla[openvino]')"
        ) from exc
    if precision not in ("f32", "bf16", "f16"):
        raise ValueError(f"precision={precision!r}: OpenVINO's inference precision is one of f32, bf16, f16")
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    core = ov.Core()
    compiled = [
        core.compile_model(str(folder / name), "CPU", config)
        for name in ("encoder.onnx", "denoise_step.onnx")
    ]
    return [lambda feed, c=graph: c(feed)[0] for graph in compiled]


class OnnxSampler:
    """The flow-matching loop over the exported graphs, on onnxruntime (default) or OpenVINO.

    ``runtime="onnxruntime"``: ``providers`` choose the device (CPU unless they say else), fp32.
    ``runtime="openvino"``: Intel's runtime on the CPU; ``precision`` is its inference precision
    (``"f32"``; ``"bf16"`` on CPUs with AMX / AVX-512 bf16, where OpenVINO keeps its own choice of
    layers in f32; ``"f16"``, not measured). Measured in docs/benchmarks.md.
    """

    def __init__(
        self,
        out_dir: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        runtime: str = "onnxruntime",
        precision: str = "f32",
    ):
        folder = Path(out_dir)
        self.meta = json.loads((folder / "export.json").read_text())
        if runtime == "onnxruntime":
            self.encoder, self.step = _onnxruntime_graphs(folder, providers, threads)
        elif runtime == "openvino":
            self.encoder, self.step = _openvino_graphs(folder, precision, threads)
        else:
            raise ValueError(f"runtime={runtime!r} is unknown: use one of {', '.join(RUNTIMES)}")

    def __call__(self, inputs: dict[str, Any], noise: np.ndarray, steps: int | None = None) -> np.ndarray:
        """Model inputs (numpy or torch) + noise [B, T, D] -> the raw action [B, T, D] (before postprocess)."""
        feed = {k: np.asarray(inputs[k]) for k in ENCODER_INPUTS}
        context = self.encoder(feed)
        x1 = np.asarray(noise, dtype=np.float32)
        proprio = np.asarray(inputs["proprio"], dtype=np.float32)
        action = np.zeros_like(x1)
        steps = int(steps or self.meta["num_denoising_steps"])
        for i in range(steps, 0, -1):
            t = np.full((x1.shape[0],), i / steps, dtype=np.float32)
            x_t = x1 * t[:, None, None] + action * (1 - t)[:, None, None]
            step_feed = {
                "context": context,
                "domain_id": feed["domain_id"],
                "x_t": x_t,
                "proprio": proprio,
                "t": t,
            }
            action = np.asarray(self.step(step_feed), dtype=np.float32)
        return action


def check_onnx(
    model: XVLAModel, out_dir: str | Path, batch: int = 3, threads: int | None = None
) -> dict[str, float]:
    """Max abs difference between onnxruntime and eager torch (fp32) at a batch size not used at export."""
    meta = json.loads((Path(out_dir) / "export.json").read_text())
    ex = example_inputs(model, batch, meta["views"], tuple(meta["image_size"]))
    sampler = OnnxSampler(out_dir, threads=threads)
    start = time.perf_counter()
    raw = sampler({k: v.numpy() for k, v in ex.items()}, ex["noise"].numpy())
    onnx_s = time.perf_counter() - start
    with torch.no_grad():
        ours = torch.from_numpy(raw)
        post = model.action_space.postprocess(ours)
        start = time.perf_counter()
        eager = type(model).generate_actions(
            model, **{k: ex[k] for k in (*ENCODER_INPUTS, "proprio")}, noise=ex["noise"]
        )
        eager_s = time.perf_counter() - start
    return {
        "max_abs_diff": float((post - eager).abs().max()),
        "onnx_s": onnx_s,
        "eager_s": eager_s,
        "batch": batch,
    }


def chunk_seconds(model: XVLAModel, out_dir: str | Path, batch: int = 3) -> float:
    """Seconds one chunk takes on ``model`` as loaded (e.g. its compiled fast path) with :func:`check_onnx`'s
    inputs, after one chunk that compiles: the time to set against the exported graphs'."""
    meta = json.loads((Path(out_dir) / "export.json").read_text())
    ex = example_inputs(model, batch, meta["views"], tuple(meta["image_size"]))
    inputs = {k: ex[k] for k in (*ENCODER_INPUTS, "proprio")}
    with torch.inference_mode():
        model.generate_actions(**inputs, noise=ex["noise"])
        start = time.perf_counter()
        model.generate_actions(**inputs, noise=ex["noise"])
    return time.perf_counter() - start


def trtexec_command(
    out_dir: str | Path, graph: str, max_batch: int = 8, precision: str = "bf16"
) -> list[str]:
    """The ``trtexec`` call that builds a TensorRT engine from one exported graph (batch 1..max_batch)."""
    folder = Path(out_dir)
    meta = json.loads((folder / "export.json").read_text())
    height, width = meta["image_size"]
    context = "x".join(map(str, meta["context_shape"]))
    per_sample = {
        "encoder": {
            "input_ids": f"{meta['text_length']}",
            "image_input": f"{meta['views']}x3x{height}x{width}",
            "image_mask": f"{meta['views']}",
            "domain_id": "",
        },
        "denoise_step": {
            "context": context,
            "domain_id": "",
            "x_t": f"{meta['chunk_size']}x{meta['model_action_dim']}",
            "proprio": f"{meta['proprio_dim']}",
            "t": "",
        },
    }[graph]

    def shapes(batch: int) -> str:
        return ",".join(f"{name}:{batch}" + (f"x{rest}" if rest else "") for name, rest in per_sample.items())

    return [
        "trtexec",
        f"--onnx={folder / (graph + '.onnx')}",
        f"--saveEngine={folder / (graph + '.plan')}",
        f"--{precision}",
        f"--minShapes={shapes(1)}",
        f"--optShapes={shapes(1)}",
        f"--maxShapes={shapes(max_batch)}",
    ]
