"""Training speed next to the reference: LeRobot 0.4.4's `xvla` forward/backward/AdamW vs this library.

Same weights (LeRobot writes the checkpoint, we load it), same batch, same precision (fp32, or bf16
autocast). Each implementation x precision runs in its own worker process, so peak memory (max RSS,
which includes each runtime's imports) belongs to that case; the workers are driven in interleaved
rounds (one training step each per round) and the table gives medians.

    python benchmarks/compare_lerobot_train.py --reference-python /path/to/refenv/bin/python
    python benchmarks/compare_lerobot_train.py --reference-python ... --batch 8 --ours eager compiled

One step = forward (flow-matching loss, dropout on) + backward + grad-norm clip (10) + AdamW
(lr 1e-4, betas 0.9/0.99). The reference uses torch's default AdamW; ours uses what our trainer uses
(fused AdamW; and like `xvla train`, :func:`xvla.utils.keep_freed_memory`), and ``compiled`` adds
:func:`xvla.train.speed.compile_for_training` (whose dropout and GELU take their compiled forms: xvla.model.compiled_ops).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare_lerobot as cl  # noqa: E402  (sizes, florence configs, inputs: shared with the inference comparison)


def training_batch(size: str, batch: int) -> dict:
    import torch

    inputs, _ = cl.make_inputs(size, batch, 32)
    g = torch.Generator().manual_seed(1)
    action = torch.randn(batch, 32, 20, generator=g)
    action[..., [9, 19]] = (torch.rand(batch, 32, 2, generator=g) > 0.5).float()  # ee6d grippers are 0/1
    return {**inputs, "action": action}


def build_model(args):
    """The model this worker trains: the reference's (built with seed 0, saved) or ours (loaded from it)."""
    import torch

    if args.worker == "ref":
        sys.path.insert(0, str(HERE.parent / "scripts"))
        from make_parity_fixtures import install_torchvision_stub

        install_torchvision_stub()
        return cl.build_reference(args), torch.optim.AdamW
    from xvla import XVLAPolicy
    from xvla.train.speed import compile_for_training, fused_adamw_supported
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as `xvla train` does
    model = XVLAPolicy.from_pretrained(args.checkpoint).model
    if args.variant == "compiled":
        compile_for_training(model)
    fused = fused_adamw_supported(model.device)
    return model, lambda params, **kw: torch.optim.AdamW(params, fused=fused, **kw)


def worker(args) -> None:
    """One training step per stdin line; replies with its time, the loss and this process's peak RSS."""
    import torch

    torch.set_num_threads(args.threads)
    model, adamw = build_model(args)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0)
    batch = training_batch(args.size, args.batch)
    bf16 = args.precision == "bf16"
    print("READY", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            total = sum(model(**batch).values())
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ms = 1000 * (time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps({"ms": ms, "loss": total.item(), "peak_mb": peak}), flush=True)


class Worker:
    def __init__(self, python: str, name: str, extra: list[str], args):
        self.name = name
        cmd = [
            python,
            __file__,
            *extra,
            "--size",
            args.size,
            "--batch",
            str(args.batch),
            "--threads",
            str(args.threads),
        ]
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if not self.proc.stdout.readline().startswith("READY"):
            sys.exit(f"worker {name} did not start (exit {self.proc.wait()}); see its stderr above")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.startswith("RESULT "):
            sys.exit(f"worker {self.name} failed (exit {self.proc.poll()}); see its stderr above")
        return json.loads(line[7:])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def start_workers(args, tmp: Path) -> list[Worker]:
    florence = tmp / "florence.json"
    florence.write_text(json.dumps(cl.florence_for(args.size)))
    workers = []
    for i, precision in enumerate(args.precisions):
        # Each reference worker builds the same seeded model; the first one's checkpoint is what we load.
        ckpt = str(tmp / f"ref{i}")
        extra = [
            "--worker",
            "ref",
            "--precision",
            precision,
            "--checkpoint",
            ckpt,
            "--florence-json",
            str(florence),
        ]
        workers.append(Worker(args.reference_python, f"ref-{precision}", extra, args))
    for precision in args.precisions:
        for variant in args.ours:
            extra = [
                "--worker",
                "ours",
                "--variant",
                variant,
                "--precision",
                precision,
                "--checkpoint",
                str(tmp / "ref0"),
            ]
            workers.append(Worker(sys.executable, f"ours-{variant}-{precision}", extra, args))
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference-python")
    parser.add_argument("--size", default="mid", choices=list(cl.SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--ours", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps per worker (compiles happen here)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json")
    parser.add_argument("--worker", choices=["ref", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="eager", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--florence-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.reference_python:
        parser.error("--reference-python is required (the reference must not be installed beside xvla)")
    with tempfile.TemporaryDirectory() as tmp:
        workers = start_workers(args, Path(tmp))
        try:
            results = {w.name: [] for w in workers}
            for _ in range(args.warmup):
                for w in workers:
                    print(f"  warm-up {w.name}: {w.step()['ms']:.0f} ms", file=sys.stderr, flush=True)
            for _ in range(args.repeats):
                for w in workers:
                    results[w.name].append(w.step())
        finally:
            for w in workers:
                w.close()
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, list[dict]], args) -> None:
    print(
        f"\nTraining step, '{args.size}' config, batch {args.batch}, CPU ({os.cpu_count()} cores), torch threads="
        f"{args.threads}, OMP_WAIT_POLICY=PASSIVE, {args.repeats} interleaved rounds (median) after {args.warmup} "
        "warm-up steps\n"
    )
    print(
        "| implementation | precision | ms / step | samples/s | x reference samples/s | peak RSS MB | x reference peak |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        precision = name.rsplit("-", 1)[1]
        ref = results[f"ref-{precision}"]
        ms, ref_ms = statistics.median(r["ms"] for r in rows), statistics.median(r["ms"] for r in ref)
        peak, ref_peak = rows[-1]["peak_mb"], ref[-1]["peak_mb"]
        label = "LeRobot 0.4.4" if name.startswith("ref") else f"xvla ({name.split('-')[1]})"
        print(
            f"| {label} | {precision} | {ms:.0f} | {args.batch * 1000 / ms:.2f} | {ref_ms / ms:.2f} | "
            f"{peak:.0f} | {peak / ref_peak:.2f} |"
        )


if __name__ == "__main__":
    main()
