"""Inference speed and memory: time per action chunk and peak memory, per model size, batch and dtype.

Each case runs in its own subprocess so that peak memory (max RSS on CPU, max allocated on CUDA)
belongs to that case alone. Times are the median over ``--repeats`` timed chunks after one warm-up,
each chunk = image/text encoding once + ``--steps`` denoising steps (the released default is 10).

    python benchmarks/inference.py                       # tiny + mid, batch 1 and 8, fp32 and bf16
    python benchmarks/inference.py --configs full --batches 1
    python benchmarks/inference.py --device cuda --configs tiny mid full

Threads: the number of torch threads is printed with the table (``--threads``, default: all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # name: (XVLAConfig overrides, image size, views, text length)
    "tiny": (dict(hidden_size=64, depth=2, num_heads=4, len_soft_prompts=4, dim_time=16, chunk_size=8,
                  n_action_steps=8, florence=dict(width=32)), 64, 2, 16),
    "mid": (dict(hidden_size=512, depth=8, num_heads=8, florence=dict(width=128, stages=4)), 224, 2, 64),
    "full": (dict(), 224, 2, 64),  # XVLAConfig() defaults: Florence-2-large + 24x1024 transformer (0.9B)
}  # fmt: skip


def run_case(name: str, batch: int, dtype: str, device: str, steps: int, repeats: int, threads: int) -> dict:
    import torch

    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.model import XVLAModel

    torch.set_num_threads(threads)
    overrides, size, views, length = CONFIGS[name]
    overrides = dict(overrides)
    florence = overrides.pop("florence", None)
    if florence:
        overrides["florence_config"] = tiny_florence_config(max_positions=512, **florence)
    config = XVLAConfig(dtype=dtype, tokenizer_max_length=length, **overrides)
    torch.manual_seed(0)
    model = XVLAModel(config).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device=device).manual_seed(0)
    inputs = dict(
        input_ids=torch.randint(3, 1000, (batch, length), device=device),
        image_input=torch.randn(batch, views, 3, size, size, device=device, generator=gen),
        image_mask=torch.ones(batch, views, dtype=torch.bool, device=device),
        domain_id=torch.arange(batch, device=device) % config.num_domains,
        proprio=torch.randn(batch, config.proprio_dim, device=device, generator=gen),
    )

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model.generate_actions(**inputs, steps=steps)  # warm-up
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate_actions(**inputs, steps=steps)
            sync()
            times.append(time.perf_counter() - start)
        # Split: encoding (once per chunk) vs one denoising step.
        start = time.perf_counter()
        context = model.encode(
            inputs["input_ids"], inputs["image_input"], inputs["image_mask"], inputs["domain_id"]
        )
        sync()
        encode_s = time.perf_counter() - start
        x = torch.randn(batch, config.chunk_size, model.dim_action, device=device, dtype=model.dtype)
        t = torch.ones(batch, device=device, dtype=model.dtype)
        start = time.perf_counter()
        model.denoise_step(context, x, inputs["proprio"].to(model.dtype), t)
        sync()
        step_s = time.perf_counter() - start
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
        memory_kind = "cuda max allocated"
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory_kind = "max RSS"
    return {
        "config": name,
        "params_m": params / 1e6,
        "batch": batch,
        "dtype": dtype,
        "device": device,
        "chunk_ms": 1000 * statistics.median(times),
        "encode_ms": 1000 * encode_s,
        "step_ms": 1000 * step_s,
        "peak_mb": peak_mb,
        "memory_kind": memory_kind,
        "repeats": repeats,
        "steps": steps,
        "image": f"{views}x{size}x{size}",
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.case:
        name, batch, dtype = args.case.split(",")
        row = run_case(name, int(batch), dtype, args.device, args.steps, args.repeats, args.threads)
        print("RESULT " + json.dumps(row))
        return

    rows = []
    for name in args.configs:
        for dtype in args.dtypes:
            for batch in args.batches:
                cmd = [sys.executable, __file__, "--case", f"{name},{batch},{dtype}", "--device", args.device,
                       "--steps", str(args.steps), "--repeats", str(args.repeats), "--threads", str(args.threads)]  # fmt: skip
                env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if out.returncode != 0 or not lines:
                    print(f"{name} b{batch} {dtype}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                row = json.loads(lines[-1][len("RESULT ") :])
                rows.append(row)
                print(
                    f"done {name} b{batch} {dtype}: {row['chunk_ms']:.1f} ms/chunk",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"\nX-VLA inference ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads={args.threads}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, "
        f"device={args.device}, {args.steps} denoising steps, median of {args.repeats})\n"
    )
    header = "| config | params (M) | images | batch | dtype | ms / chunk | encode ms | ms / step | chunks/s x batch | peak MB |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        throughput = r["batch"] * 1000 / r["chunk_ms"]
        print(
            f"| {r['config']} | {r['params_m']:.1f} | {r['image']} | {r['batch']} | {r['dtype']} | "
            f"{r['chunk_ms']:.1f} | {r['encode_ms']:.1f} | {r['step_ms']:.1f} | {throughput:.2f} | "
            f"{r['peak_mb']:.0f} ({r['memory_kind']}) |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
