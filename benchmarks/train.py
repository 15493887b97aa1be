"""Training speed and memory, and data-loading throughput from a LeRobot v3.0 dataset with video.

Model cases (each in its own subprocess, so peak memory belongs to that case alone): one full
optimizer step = flow-matching forward + backward + grad clipping + AdamW over the four parameter
groups, on a synthetic batch of two 224x224 cameras and 64 text tokens that the policy's processor
turned into model inputs beforehand (as the loader's ``Collator`` does, in its workers).
Reported: median ms/step over ``--repeats`` steps after ``--warmup``, samples/s, peak memory (max
RSS on CPU, max allocated on CUDA).

Data cases: a v3.0 dataset (two mp4 cameras, 240x320, 30 fps) is written once to a temp folder
(or ``--data-root``), then ``MixtureDataset`` + ``MixtureBatchSampler`` + ``DataLoader`` are read for
``--data-batches`` batches: video decoding, optional colour jitter, and the ``Collator`` (the policy's
processor: resize to 224x224, normalisation, tokenization, padding).

    python benchmarks/train.py                                   # mid, fp32 + bf16, batch 4; data 0/2 workers
    python benchmarks/train.py --configs tiny mid --batches 2 8 --device cuda
    python benchmarks/train.py --skip-model --workers 0 2 4

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
import tempfile
import time
from pathlib import Path

CONFIGS = {
    # name: (XVLAConfig overrides, image size, views, text length) -- as benchmarks/inference.py
    "tiny": (dict(hidden_size=64, depth=2, num_heads=4, len_soft_prompts=4, dim_time=16, chunk_size=8,
                  n_action_steps=8, florence=dict(width=32)), 64, 2, 16),
    "mid": (dict(hidden_size=512, depth=8, num_heads=8, florence=dict(width=128, stages=4)), 224, 2, 64),
    "full": (dict(), 224, 2, 64),
}  # fmt: skip
DATA_TASK = "pick up the cube"  # the data benchmark's one instruction


def _peak_mb(device: str) -> tuple[float, str]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "max RSS"


def run_model_case(
    name, batch, precision, device, warmup, repeats, threads, grad_ckpt, compile=False
) -> dict:
    import torch

    from xvla import XVLAPolicy
    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.train.config import build_train_config
    from xvla.train.optim import GroupLRScheduler, build_optimizer, build_schedules
    from xvla.train.params import select_trainable
    from xvla.train.speed import compile_for_training, fused_adamw_supported
    from xvla.train.trainer import TrainingModule
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as `xvla train` does
    torch.set_num_threads(threads)
    overrides, size, views, length = CONFIGS[name]
    overrides = dict(overrides)
    florence = overrides.pop("florence", None)
    if florence:
        overrides["florence_config"] = tiny_florence_config(max_positions=512, **florence)
    keys = [f"observation.images.cam{i}" for i in range(views)]
    config = XVLAConfig(tokenizer_max_length=length, image_keys=keys, image_size=(size, size), **overrides)
    torch.manual_seed(0)
    policy = XVLAPolicy(config).to(device).train()
    if grad_ckpt:
        policy.model.transformer.gradient_checkpointing = True
        policy.model.vlm.language_model.encoder.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    params = sum(p.numel() for p in policy.parameters())
    cfg = build_train_config({"recipe": "lerobot", "dataset": {"root": "/unused"}, "steps": 1000})
    trainable = select_trainable(policy.model, "config")
    if compile:
        compile_for_training(policy.model)
    optimizer = build_optimizer(
        policy.model, trainable, cfg.optimizer, fused=fused_adamw_supported(torch.device(device))
    )
    scheduler = GroupLRScheduler(
        optimizer, build_schedules(cfg.optimizer, cfg.scheduler, cfg.steps), step=500
    )
    module = TrainingModule(policy)
    gen = torch.Generator().manual_seed(0)
    data = {k: torch.rand(batch, 3, size, size, generator=gen) for k in keys}
    data["observation.state"] = torch.randn(batch, 8, generator=gen)
    data["observation.language.tokens"] = torch.randint(3, 1000, (batch, length), generator=gen)
    data["action"] = torch.randn(batch, config.chunk_size, policy.model.dim_action, generator=gen)
    data["domain_id"] = torch.zeros(batch, dtype=torch.long)
    # What the loader's Collator hands the training step: the policy's processor output plus targets.
    inputs = policy.processor(data)
    inputs["action"] = policy.processor.actions(data["action"], policy.model.action_space)
    bf16 = precision == "bf16"

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step():
        batch_dev = {k: v.to(device) for k, v in inputs.items()}
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            total, _ = module(batch_dev)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.grad is not None], 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return total.item()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    peak, kind = _peak_mb(device)
    return {
        "kind": "model",
        "config": name,
        "params_m": params / 1e6,
        "batch": batch,
        "precision": precision,
        "grad_ckpt": grad_ckpt,
        "compile": compile,
        "device": device,
        "ms_step": ms,
        "samples_s": batch * 1000 / ms,
        "peak_mb": peak,
        "memory_kind": kind,
        "image": f"{views}x{size}x{size}",
        "threads": threads,
        "repeats": repeats,
    }


def write_bench_dataset(root: Path, episodes: int = 8, length: int = 60, hw=(240, 320)) -> Path:
    import numpy as np

    from xvla.data import LeRobotDatasetWriter

    h, w = hw
    features = {
        "observation.images.front": {"dtype": "video", "shape": (h, w, 3)},
        "observation.images.wrist": {"dtype": "video", "shape": (h, w, 3)},
        "observation.state": {"dtype": "float32", "shape": (8,)},
        "action": {"dtype": "float32", "shape": (7,)},
    }
    writer = LeRobotDatasetWriter.create(root, fps=30, features=features, robot_type="bench")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    for ep in range(episodes):
        for i in range(length):
            base = ((xx + 3 * i + 17 * ep) % 256).astype(np.uint8)
            img = np.stack([base, ((yy + i) % 256).astype(np.uint8), np.full_like(base, 40 * ep % 256)], -1)
            writer.add_frame(
                {
                    "observation.images.front": img,
                    "observation.images.wrist": img[::-1].copy(),
                    "observation.state": rng.standard_normal(8).astype(np.float32),
                    "action": rng.standard_normal(7).astype(np.float32),
                }
            )
        writer.save_episode(task=DATA_TASK)
    writer.finalize()
    return root


def run_data_case(root: str, workers: int, batch: int, batches: int, jitter: bool, threads: int) -> dict:
    import torch

    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.processor import ObservationProcessor
    from xvla.tokenizer import train_bpe_tokenizer
    from xvla.train.config import build_train_config
    from xvla.train.mixture import Collator, MixtureBatchSampler, MixtureDataset, build_loader, open_sources

    torch.set_num_threads(threads)
    keys = ["observation.images.front", "observation.images.wrist"]
    config = XVLAConfig(
        hidden_size=64,
        depth=1,
        num_heads=4,
        chunk_size=32,
        florence_config=tiny_florence_config(),
        image_keys=keys,
        image_size=(224, 224),
        action_mode="auto",
        real_action_dim=7,
    )
    cfg = build_train_config({"dataset": {"root": root}, "mixture": {"color_jitter": {"enable": jitter}}})
    sources = open_sources(cfg, config, keys)
    ds = MixtureDataset(sources, keys, config.chunk_size, color_jitter_cfg=cfg.mixture.color_jitter, seed=0)
    sampler = MixtureBatchSampler(ds.sizes, [1.0], batch_size=batch, seed=0)
    # The policy's own observation pipeline, with a small local tokenizer (the benchmark runs offline).
    processor = ObservationProcessor(config, train_bpe_tokenizer([DATA_TASK], vocab_size=300))
    loader = iter(build_loader(ds, sampler, Collator(processor), num_workers=workers, prefetch_factor=4))
    next(loader)  # workers started, first batch out
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - start
    peak, kind = _peak_mb("cpu")
    return {
        "kind": "data",
        "workers": workers,
        "batch": batch,
        "batches": batches,
        "jitter": jitter,
        "samples_s": batch * batches / elapsed,
        "ms_batch": 1000 * elapsed / batches,
        "peak_mb": peak,
        "memory_kind": kind + " (main process)",
        "frames": len(ds),
        "threads": threads,
    }


def _sub(args_list: list[str]) -> dict | None:
    cmd = [sys.executable, __file__, *args_list]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"case {args_list}: FAILED\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=["mid"], choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[4])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument(
        "--grad-ckpt", action="store_true", help="also run each case with gradient checkpointing"
    )
    parser.add_argument("--compile", action="store_true", help="also run each case with compile_for_training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--data-batch", type=int, default=8)
    parser.add_argument("--data-batches", type=int, default=20)
    parser.add_argument("--data-root", help="an existing v3.0 dataset with the two benchmark cameras")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()

    if args.case:
        kind, *rest = args.case.split(",")
        if kind == "model":
            name, batch, precision, ckpt, comp = rest
            row = run_model_case(
                name,
                int(batch),
                precision,
                args.device,
                args.warmup,
                args.repeats,
                args.threads,
                ckpt == "1",
                comp == "1",
            )
        else:
            root, workers, jitter = rest
            row = run_data_case(
                root, int(workers), args.data_batch, args.data_batches, jitter == "1", args.threads
            )
        print("RESULT " + json.dumps(row))
        return

    common = ["--device", args.device, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
              "--threads", str(args.threads), "--data-batch", str(args.data_batch),
              "--data-batches", str(args.data_batches)]  # fmt: skip
    rows = []
    if not args.skip_model:
        for name in args.configs:
            for precision in args.precisions:
                for batch in args.batches:
                    for ckpt, comp in [
                        (c, k)
                        for c in ([0, 1] if args.grad_ckpt else [0])
                        for k in ([0, 1] if args.compile else [0])
                    ]:
                        row = _sub(["--case", f"model,{name},{batch},{precision},{ckpt},{comp}", *common])
                        if row:
                            rows.append(row)
                            print(
                                f"done {name} b{batch} {precision}: {row['ms_step']:.0f} ms/step",
                                file=sys.stderr,
                            )
    if not args.skip_data:
        with tempfile.TemporaryDirectory() as tmp:
            root = args.data_root
            if root is None:
                start = time.perf_counter()
                root = str(write_bench_dataset(Path(tmp) / "bench"))
                print(f"wrote the benchmark dataset in {time.perf_counter() - start:.1f}s", file=sys.stderr)
            for workers in args.workers:
                for jitter in (0, 1):
                    row = _sub(["--case", f"data,{root},{workers},{jitter}", *common])
                    if row:
                        rows.append(row)
                        print(
                            f"done data w{workers} jitter={jitter}: {row['samples_s']:.1f} samples/s",
                            file=sys.stderr,
                        )

    cpu = platform.processor() or platform.machine()
    print(
        f"\nX-VLA training ({cpu}, {os.cpu_count()} cores, torch threads={args.threads}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, device={args.device}, "
        f"median of {args.repeats} steps after {args.warmup} warm-up)\n"
    )
    model_rows = [r for r in rows if r["kind"] == "model"]
    if model_rows:
        header = "| config | params (M) | images | batch | precision | grad ckpt | compiled | ms / step | samples/s | peak MB |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for r in model_rows:
            print(
                f"| {r['config']} | {r['params_m']:.1f} | {r['image']} | {r['batch']} | {r['precision']} | "
                f"{'yes' if r['grad_ckpt'] else 'no'} | {'yes' if r.get('compile') else 'no'} | {r['ms_step']:.0f} | {r['samples_s']:.2f} | "
                f"{r['peak_mb']:.0f} ({r['memory_kind']}) |"
            )
    data_rows = [r for r in rows if r["kind"] == "data"]
    if data_rows:
        print(
            f"\nData loading: v3.0 dataset, 2 mp4 cameras 240x320 -> 224x224, chunk 32, batch {args.data_batch}, "
            f"{args.data_batches} batches\n"
        )
        header = "| loader workers | colour jitter | samples/s | ms / batch | peak MB |"
        print(header)
        print("|---" * (header.count("|") - 1) + "|")
        for r in data_rows:
            print(
                f"| {r['workers']} | {'on' if r['jitter'] else 'off'} | {r['samples_s']:.1f} | "
                f"{r['ms_batch']:.0f} | {r['peak_mb']:.0f} ({r['memory_kind']}) |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
