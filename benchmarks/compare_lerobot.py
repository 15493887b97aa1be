"""Speed next to the reference: LeRobot 0.4.4's `xvla` vs this library, same weights, same inputs.

The reference lives in its own venv (see tests/fixtures/parity/README.md). It runs as a
worker process there, on one checkpoint that LeRobot itself writes; this process loads the same
checkpoint. Measurements are interleaved: each round times every variant once (reference fp32,
reference bf16, ours fp32, ours fast path, ...), alternating the two processes, and the table gives
medians over rounds, so load from other processes hits every variant alike.

    python benchmarks/compare_lerobot.py --reference-python /path/to/refenv/bin/python
    python benchmarks/compare_lerobot.py --reference-python ... --sizes mid full --batches 1 8

Variants: ``ref-fp32``/``ref-bf16`` (LeRobot, its ``dtype`` field), ``fp32`` (ours, eager),
``fp32-compiled`` (ours, ``compile=True``), ``bf16-compiled`` (ours, ``dtype="bfloat16", compile=True``),
``int8`` (ours, ``quantize="int8", compile=True``), ``auto-fast`` (ours, ``fast=True``: what
:func:`xvla.hardware.choose` picks for this machine; the header names it), ``openvino-f32`` / ``openvino-bf16`` (our ONNX export of
the same checkpoint on OpenVINO: ``OnnxSampler(out, runtime="openvino", precision=...)``).
Errors are max / mean abs differences of the action chunk from the reference fp32 chunk (same noise).

Memory: all variants of the 0.9B size at once need more than 24 GB. Our variants then run in passes, each
sized to the memory available beside the reference worker (``--memory-gb`` to set it; see
:func:`plan_passes`); every pass times the reference again, and a table's ratios are to the reference
rows of the same pass (its ``pass`` column).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZES = {
    # name: (head overrides, florence width, image size, views, text length, batch sizes)
    "mid": (dict(hidden_size=512, depth=8, num_heads=8), 128, 224, 2, 64),
    "small": (dict(hidden_size=256, depth=4, num_heads=4), 64, 128, 2, 32),  # 4x4 (+1) tokens per view
    "full": (dict(), 1024, 224, 2, 64),  # LeRobot's defaults + Florence-2-large: the released 0.9B size
}
VARIANTS = (
    "ref-fp32",
    "ref-bf16",
    "fp32",
    "fp32-compiled",
    "bf16-compiled",
    "int8",
    "auto-fast",
    "openvino-f32",
    "openvino-bf16",
)


def florence_remote(width: int, length: int) -> dict:
    return {
        "model_type": "florence2",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "vocab_size": 1024,
        "projection_dim": width,
        "vision_config": {
            # Four stages downsample 32x, as Florence-2-large does (224x224 -> 7x7 tokens + 1 pooled).
            "model_type": "davit",
            "drop_path_rate": 0.0,
            "patch_size": [7, 3, 3, 3],
            "patch_stride": [4, 2, 2, 2],
            "patch_padding": [3, 1, 1, 1],
            "patch_prenorm": [False, True, True, True],
            "dim_embed": [16, 32, 64, width],
            "num_heads": [2, 4, 8, 8],
            "num_groups": [2, 4, 8, 8],
            "depths": [1, 1, 1, 1],
            "window_size": 4,
            "projection_dim": width,
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 16},
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 32},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "text_config": {
            "model_type": "florence2_language",
            "vocab_size": 1024,
            "d_model": width,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * width,
            "decoder_ffn_dim": 2 * width,
            "max_position_embeddings": 512,
        },
    }


def florence_for(size: str) -> dict:
    """Remote-code florence_config (what LeRobot reads) for a size, built with our converter for `full`."""
    head, width, image, views, length = SIZES[size]
    if size != "full":
        return florence_remote(width, length)
    from xvla.checkpoints.florence import florence_config_to_remote
    from xvla.config import florence2_large_config

    return florence_config_to_remote(florence2_large_config())


def make_inputs(size: str, batch: int, proprio_dim: int):
    import torch

    _, _, image, views, length = SIZES[size]
    g = torch.Generator().manual_seed(0)
    return dict(
        input_ids=torch.randint(3, 1000, (batch, length), generator=g),
        image_input=torch.randn(batch, views, 3, image, image, generator=g),
        image_mask=torch.ones(batch, views, dtype=torch.bool),
        domain_id=torch.arange(batch) % 30,
        proprio=torch.randn(batch, proprio_dim, generator=g),
    ), torch.randn(batch, 32, 20, generator=g)


def timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - start), out


# ---------------------------------------------------------------------------------------- reference worker
def build_reference(args):
    """In the reference venv: a LeRobot policy with random weights, saved to args.checkpoint."""
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.xvla.configuration_xvla import XVLAConfig
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

    head, width, image, views, length = SIZES[args.size]
    torch.manual_seed(0)
    features = {
        f"observation.images.cam{i}": PolicyFeature(FeatureType.VISUAL, (3, image, image))
        for i in range(views)
    }
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (32,))
    config = XVLAConfig(
        florence_config=json.loads(Path(args.florence_json).read_text()),
        tokenizer_max_length=length,
        device="cpu",
        input_features=features,
        output_features={"action": PolicyFeature(FeatureType.ACTION, (20,))},
        **head,
    )
    policy = XVLAPolicy(config)
    with torch.no_grad():
        for p in policy.parameters():  # image_projection is left uninitialised by the reference
            p.copy_(torch.randn_like(p) * 0.02)
    policy.save_pretrained(args.checkpoint)
    return policy.model.eval()


def reference_worker(args) -> None:
    """Answer one JSON request per stdin line: {"batch": B, "dtype": ...} -> {"ms": ..., "actions": ...}."""
    import copy

    sys.path.insert(0, str(HERE.parent / "scripts"))
    from make_parity_fixtures import install_torchvision_stub

    install_torchvision_stub()
    import torch

    torch.set_num_threads(args.threads)
    models = {"float32": build_reference(args)}
    if "ref-bf16" in args.variants:
        bf16 = copy.deepcopy(models["float32"])
        bf16.config.dtype = "bfloat16"
        bf16._apply_dtype()
        models["bfloat16"] = bf16
    print("READY", flush=True)
    real_randn = torch.randn
    for line in sys.stdin:
        request = json.loads(line)
        model = models[request["dtype"]]
        inputs, noise = make_inputs(args.size, request["batch"], 32)
        torch.randn = lambda *a, noise=noise, **k: noise.to(k.get("dtype") or torch.float32)
        try:
            with torch.no_grad():
                ms, actions = timed(lambda m=model, x=inputs: m.generate_actions(**x, steps=10))
        finally:
            torch.randn = real_randn
        print("RESULT " + json.dumps({"ms": ms, "actions": actions.float().tolist()}), flush=True)


class Reference:
    """The worker process in the reference venv, driven over stdin/stdout."""

    def __init__(self, args, checkpoint: str, florence_json: str):
        cmd = [args.reference_python, __file__, "--reference-worker", "--checkpoint", checkpoint, "--size", args.size,
               "--threads", str(args.threads), "--florence-json", florence_json, "--variants", *args.variants]  # fmt: skip
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            sys.exit(f"the reference worker did not start (exit {self.proc.wait()}); see its stderr above")

    def run(self, batch: int, dtype: str) -> tuple[float, Any]:
        import torch

        self.proc.stdin.write(json.dumps({"batch": batch, "dtype": dtype}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("RESULT "):
            sys.exit(f"the reference worker failed (exit {self.proc.poll()}); see its stderr above")
        out = json.loads(line[7:])
        return out["ms"], torch.tensor(out["actions"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


# ---------------------------------------------------------------------------------------- our variants
SHARE_FP32_WEIGHTS = {"fp32", "fp32-compiled", "openvino-f32", "openvino-bf16"}
# What our variants keep resident, in units of the checkpoint's fp32 weights (W), measured at full size
# (VmRSS after a chunk at batch 1, then 8; docs/benchmarks.md): loading any variant peaks at 2 W; the fp32
# weights take 1 W (shared by SHARE_FP32_WEIGHTS); each compiled graph keeps its own frozen, prepacked copy
# of the weights: one per batch size in fp32, at most two in bf16 (batch 1 and a symbolic batch). For the
# OpenVINO variants, the full-size export peaked at 7.7 GB beside 3.5 GB of fp32 weights, and each
# compiled graph holds its weights.
LOAD_PEAK = 2.0
EXPORT_PEAK = 1.2
FOOTPRINT = {  # variant: (fixed, per compiled graph)
    "fp32": (0.0, 0.0),
    "fp32-compiled": (0.0, 1.1),
    "bf16-compiled": (1.0, 0.55),
    "int8": (1.0, 0.3),
    "openvino-f32": (1.0, 0.0),
    "openvino-bf16": (0.5, 0.0),
}


def auto_equivalent() -> str:
    """The variant that ``fast=True`` amounts to on this machine (for its memory footprint)."""
    from xvla.hardware import choose

    setting = choose("cpu")
    if setting.quantize == "int8":
        return "int8"
    return "bf16-compiled" if setting.dtype == "bfloat16" else "fp32-compiled"


def machine_info() -> dict[str, Any]:
    """What ran the numbers: the probe's summary, the CPU's SIMD flags, torch's capability, the auto choice."""
    import torch

    from xvla.hardware import choose, probe

    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    return {
        "hardware": probe().summary(),
        "cpu_flags": simd,
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "auto_fast": choose("cpu").kwargs(),
        "cores": os.cpu_count(),
    }


def pass_footprint(variants: list[str], graphs: int) -> float:
    """Estimated peak memory of one process holding ``variants``, in units of the fp32 weights."""
    resident = 1.0 if set(variants) & SHARE_FP32_WEIGHTS else 0.0
    if any(v.startswith("openvino-") for v in variants):
        resident += EXPORT_PEAK  # the export's working memory stays with the process (keep_freed_memory)
    for v in variants:
        # auto-fast loads its own weights in the setting it amounts to here
        fixed, per_graph = FOOTPRINT[auto_equivalent() if v == "auto-fast" else v]
        fixed = max(fixed, 1.0) if v == "auto-fast" else fixed
        resident += fixed + per_graph * graphs
    return max(LOAD_PEAK, resident)


def plan_passes(variants: list[str], graphs: int, weights_share: float) -> list[list[str]]:
    """Our variants in consecutive groups whose footprint fits the memory left beside the reference.

    ``weights_share`` is the fp32 weights' size over that memory: ``mid`` fits in one pass, the 0.9B model
    needs several for all variants. Each pass times the reference again, so ratios stay interleaved.
    """
    limit = 1.0 / weights_share
    passes: list[list[str]] = []
    for v in variants:
        if passes and pass_footprint(passes[-1] + [v], graphs) <= limit:
            passes[-1].append(v)
        else:
            passes.append([v])
    return passes


def available_memory() -> float:
    """Bytes the kernel could give this process now (MemAvailable), less 1 GB for activations and the rest."""
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024 - 1e9


def free_compiled_graphs() -> None:
    """Drop the last pass's models: dynamo's cache holds their compiled graphs and frozen weights."""
    import gc

    import torch

    torch._dynamo.reset()
    gc.collect()


def load_ours(args, checkpoint: str, variants: list[str]) -> dict[str, Any]:
    """Our ``variants``, each a callable (batch) -> actions. fp32, fp32-compiled and the OpenVINO variants
    share one set of fp32 weights, loaded only when one of them is asked for."""
    import copy

    import torch

    from xvla import XVLAPolicy
    from xvla.model.compiled_runner import compile_for_inference
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as the `xvla` commands do
    torch.set_num_threads(args.threads)
    models = {}
    fp32 = XVLAPolicy.from_pretrained(checkpoint).model if set(variants) & SHARE_FP32_WEIGHTS else None
    if "fp32" in variants:
        models["fp32"] = copy.copy(fp32)  # a shallow copy: same parameters, keeps the eager methods
    if "fp32-compiled" in variants:
        compile_for_inference(fp32, batch_sizes=args.batches)
        models["fp32-compiled"] = fp32
    if (
        "bf16-compiled" in variants
    ):  # = from_pretrained(dtype="bfloat16", compile=True), with a choice of mode
        models["bf16-compiled"] = XVLAPolicy.from_pretrained(checkpoint, dtype="bfloat16").model
        compile_for_inference(models["bf16-compiled"], batch_sizes=args.batches, mode=args.compile_mode)
    if "auto-fast" in variants:
        models["auto-fast"] = XVLAPolicy.from_pretrained(
            checkpoint, fast=True, device="cpu", compile_batch_sizes=tuple(args.batches)
        ).model

    if "int8" in variants:  # int8 dynamic quantization of the linears, then the compiled path
        models["int8"] = XVLAPolicy.from_pretrained(
            checkpoint,
            dtype=args.int8_dtype,
            quantize="int8",
            compile=True,
            compile_batch_sizes=tuple(args.batches),
        ).model

    def runner(model):
        def run(batch: int) -> tuple[float, Any]:
            inputs, noise = make_inputs(args.size, batch, 32)
            return timed(lambda: model.generate_actions(**inputs, steps=10, noise=noise).float())

        return run

    runners = {name: runner(m) for name, m in models.items()}
    for name in [v for v in variants if v.startswith("openvino-")]:
        runners[name] = openvino_runner(args, fp32, Path(checkpoint).parent / "onnx", name.split("-")[1])
    return runners


def openvino_runner(args, model, out_dir: Path, precision: str):
    """Our ONNX export of ``model`` (written once to out_dir) run by OpenVINO: (batch) -> (ms, actions)."""
    import torch

    from xvla.export import OnnxSampler, export_onnx

    _, _, image, views, _ = SIZES[args.size]
    if not (out_dir / "export.json").is_file():
        export_onnx(model, out_dir, views=views, image_size=(image, image))
    sampler = OnnxSampler(out_dir, threads=args.threads, runtime="openvino", precision=precision)

    def run(batch: int) -> tuple[float, Any]:
        inputs, noise = make_inputs(args.size, batch, 32)
        feed = {k: v.numpy() for k, v in inputs.items()}
        return timed(
            lambda: model.action_space.postprocess(torch.from_numpy(sampler(feed, noise.numpy(), steps=10)))
        )

    return run


def measure(args, reference: Reference, ours: dict[str, Any], variants: list[str], number: int) -> list[dict]:
    """Interleaved rounds: each round times every variant once; one untimed warm-up (compiles) first."""
    import torch

    def call(variant: str, batch: int):
        if variant.startswith("ref-"):
            return reference.run(batch, "bfloat16" if variant == "ref-bf16" else "float32")
        return ours[variant](batch)

    rows = []
    for batch in args.batches:
        times: dict[str, list[float]] = {v: [] for v in variants}
        actions = {}
        for v in variants:
            warm_ms, actions[v] = call(v, batch)
            print(f"  {args.size} b{batch} {v}: warm-up {warm_ms:.0f} ms", file=sys.stderr, flush=True)
        for _ in range(args.repeats):
            for v in variants:
                times[v].append(call(v, batch)[0])
        base = actions.get("ref-fp32")
        for v in variants:
            err = (actions[v] - base).abs() if base is not None else torch.full((1,), float("nan"))
            rows.append(
                {
                    "size": args.size,
                    "batch": batch,
                    "pass": number,
                    "variant": v,
                    "ms": statistics.median(times[v]),
                    "times": times[v],
                    "max_err": err.max().item(),
                    "mean_err": err.mean().item(),
                }
            )
        print_table([r for r in rows if r["batch"] == batch], args)  # as it comes: full-size runs take long
    return rows


def print_table(rows: list[dict], args) -> None:
    machine = machine_info()
    print(
        f"\nX-VLA vs LeRobot 0.4.4: 10 denoising steps, CPU ({os.cpu_count()} cores), torch threads={args.threads}, "
        f"OMP_WAIT_POLICY=PASSIVE, {args.repeats} interleaved rounds (median), one warm-up per variant"
    )
    print(
        f"{machine['hardware']}\nCPU flags: {' '.join(machine['cpu_flags'])}\nauto-fast = {machine['auto_fast']}\n"
    )
    passes = any(r["pass"] > 1 for r in rows)  # ratios are always to the reference rows of the same pass
    print(
        f"| size | batch |{' pass |' if passes else ''} variant | ms / chunk | x ref fp32 time | x ref bf16 time | "
        "max abs err | mean abs err |"
    )
    print("|---" * (9 if passes else 8) + "|")
    for r in rows:
        same = [q for q in rows if (q["size"], q["batch"], q["pass"]) == (r["size"], r["batch"], r["pass"])]
        ref = {q["variant"]: q["ms"] for q in same}

        def ratio(name: str, r: dict = r, ref: dict = ref) -> str:
            return f"{r['ms'] / ref[name]:.2f}" if name in ref else "-"

        pass_cell = f" {r['pass']} |" if passes else ""
        print(
            f"| {r['size']} | {r['batch']} |{pass_cell} {r['variant']} | {r['ms']:.1f} | {ratio('ref-fp32')} | "
            f"{ratio('ref-bf16')} | {r['max_err']:.1e} | {r['mean_err']:.1e} |"
        )


def run_size(args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = str(Path(tmp) / "ckpt")
        florence_json = Path(tmp) / "florence.json"
        florence_json.write_text(json.dumps(florence_for(args.size)))
        reference = Reference(args, checkpoint, str(florence_json))
        try:
            references = [v for v in args.variants if v.startswith("ref-")]
            ours = [v for v in args.variants if not v.startswith("ref-")]
            weights = sum(f.stat().st_size for f in Path(checkpoint).glob("*.safetensors"))
            budget = args.memory_gb * 1e9 if args.memory_gb else available_memory()
            # fp32 graphs are per batch size; bf16 ones one for batch 1 and one symbolic (see xvla.model.compiled_runner):
            # count per size, an upper bound for bf16 beyond two sizes.
            graphs = len(set(args.batches))
            passes = plan_passes(ours, graphs, weights / budget) if ours else [[]]
            rows = []
            for number, group in enumerate(passes, 1):
                if len(passes) > 1:
                    print(
                        f"  {args.size}: pass {number} of {len(passes)}, {group} beside the reference "
                        f"(all of {ours} at once would need more than {budget / 1e9:.1f} GB)",
                        file=sys.stderr,
                    )
                rows += measure(
                    args, reference, load_ours(args, checkpoint, group), references + group, number
                )
                free_compiled_graphs()
            return rows
        finally:
            reference.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python", help="python of the venv where lerobot==0.4.4 is installed")
    parser.add_argument("--sizes", nargs="+", default=["mid"], choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds per batch size")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--memory-gb",
        type=float,
        help="memory for our variants (default: what is available "
        "after the reference worker started, less 1 GB); sizes that need more run in passes",
    )
    parser.add_argument(
        "--compile-mode", default=None, help="torch.compile mode of the fast path (e.g. max-autotune)"
    )
    parser.add_argument(
        "--int8-dtype", default="float32", help="dtype of the int8 variant's unquantized parts"
    )
    parser.add_argument("--size", help=argparse.SUPPRESS)  # internal, for the worker
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--florence-json", help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_worker:
        reference_worker(args)
        return
    if not args.reference_python:
        parser.error("--reference-python is required (the reference must not be installed beside xvla)")
    rows = []
    for size in args.sizes:
        args.size = size
        rows += run_size(args)
        print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
