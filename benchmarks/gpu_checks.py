"""Every GPU check and timing in one run, on a machine with a CUDA device.

    python benchmarks/gpu_checks.py                    # tests + inference + training + ONNX, ~5-8 min on one GPU
    python benchmarks/gpu_checks.py --skip-tests --configs full --batches 1

1. ``pytest -k cuda``: the CUDA tests (CUDA-graph fast path vs the reference fixtures, ...).
2. Inference, ms per chunk (10 steps, CUDA-synchronised, median of ``--repeats`` after warm-up): eager fp32,
   eager bf16 and the fast path (bf16 + ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs of
   the encoder and of one denoising step), with the fast path's action error against eager fp32.
   Target: <= 50 ms per chunk for the full 0.9B model at batch 1.
3. Training step (mid config): fp32 and bf16 autocast, eager and compiled, samples/s and peak memory.
4. ONNX: export the mid config, check onnxruntime (CUDA provider if installed) against eager, and build a
   TensorRT engine with ``trtexec`` when it is on PATH (see docs/export.md).

Results are printed as markdown tables and written to ``$OUT/gpu_checks.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def build(name: str, dtype: str = "float32"):
    import torch
    from inference import CONFIGS

    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.model import XVLAModel

    overrides, size, views, length = CONFIGS[name]
    overrides = dict(overrides)
    florence = overrides.pop("florence", None)
    if florence:
        overrides["florence_config"] = tiny_florence_config(max_positions=512, **florence)
    torch.manual_seed(0)
    model = XVLAModel(XVLAConfig(tokenizer_max_length=length, **overrides)).cuda().eval()
    return model.to(getattr(torch, dtype)), size, views, length


def inputs_for(model, batch: int, size: int, views: int, length: int):
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    return dict(
        input_ids=torch.randint(3, 1000, (batch, length), device="cuda", generator=g),
        image_input=torch.randn(batch, views, 3, size, size, device="cuda", generator=g),
        image_mask=torch.ones(batch, views, dtype=torch.bool, device="cuda"),
        domain_id=torch.arange(batch, device="cuda") % model.config.num_domains,
        proprio=torch.randn(batch, model.dim_proprio, device="cuda", generator=g),
    ), torch.randn(batch, model.chunk_size, model.dim_action, device="cuda", generator=g)


def time_chunks(model, inputs, noise, repeats: int) -> tuple[float, object]:
    import torch

    out = None
    for _ in range(3):  # CUDA graphs are recorded after the first calls
        out = model.generate_actions(**inputs, noise=noise, steps=10)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate_actions(**inputs, noise=noise, steps=10)
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), out.float()


def inference_rows(args) -> list[dict]:
    import copy

    import torch

    from xvla.model.compiled_runner import compile_for_inference

    rows = []
    for name in args.configs:
        fp32, size, views, length = build(name)
        bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
        bf16.config = bf16.config.replace(dtype="bfloat16")
        fast = copy.deepcopy(bf16)
        compile_for_inference(fast, batch_sizes=args.batches)
        for batch in args.batches:
            inputs, noise = inputs_for(fp32, batch, size, views, length)
            base_ms, base = time_chunks(fp32, inputs, noise, args.repeats)
            for variant, model in (("fp32", fp32), ("bf16", bf16), ("fast bf16 + CUDA graphs", fast)):
                ms, out = (
                    (base_ms, base) if model is fp32 else time_chunks(model, inputs, noise, args.repeats)
                )
                err = (out - base).abs()
                rows.append(
                    {
                        "config": name,
                        "batch": batch,
                        "variant": variant,
                        "ms": ms,
                        "max_err": err.max().item(),
                        "mean_err": err.mean().item(),
                    }
                )
                print(f"  {name} b{batch} {variant}: {ms:.1f} ms", file=sys.stderr, flush=True)
        del fp32, bf16, fast
        torch.cuda.empty_cache()
    return rows


def run_training(args) -> str:
    cmd = [sys.executable, str(HERE / "train.py"), "--device", "cuda", "--configs", "mid", "--batches", "8",
           "--skip-data", "--compile", "--repeats", str(args.repeats)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout


def run_onnx(args) -> dict:
    """Export the mid config, compare onnxruntime with eager, and build a TensorRT engine if trtexec exists."""
    from xvla.export import check_onnx, export_onnx, trtexec_command

    model, size, views, _ = build("mid")
    model = model.cpu()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, tmp, views=views, image_size=(size, size))
        result["onnxruntime_cpu"] = check_onnx(model, tmp)
        trtexec = shutil.which("trtexec")
        if trtexec:
            for graph in ("encoder", "denoise_step"):
                cmd = [trtexec, *trtexec_command(tmp, graph)[1:]]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                result[f"trtexec_{graph}"] = "ok" if proc.returncode == 0 else proc.stdout[-1500:]
        else:
            result["trtexec"] = "not installed: TensorRT engines not built"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=["mid", "full"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-onnx", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: these checks need a GPU")
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    if not args.skip_tests:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "tests"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        report["tests"] = proc.stdout.strip().splitlines()[-1:]
        print(proc.stdout[-3000:])
    report["inference"] = inference_rows(args)
    print(f"\nInference on {report['device']} (10 steps, median of {args.repeats})\n")
    print("| config | batch | variant | ms / chunk | max abs err vs fp32 | mean abs err |")
    print("|---|---|---|---|---|---|")
    for r in report["inference"]:
        print(
            f"| {r['config']} | {r['batch']} | {r['variant']} | {r['ms']:.1f} | {r['max_err']:.1e} | {r['mean_err']:.1e} |"
        )
    if not args.skip_training:
        report["training"] = run_training(args)
        print(report["training"])
    if not args.skip_onnx:
        report["onnx"] = run_onnx(args)
        print(json.dumps(report["onnx"], indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_checks.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
