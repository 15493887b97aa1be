"""Denoising steps against closed-loop success and chunk time: what a user on a slow CPU can trade.

    make demo                                              # trains outputs/demo (Phase I and II)
    python benchmarks/steps_vs_success.py                  # 10, 5, 3, 2 steps; fp32 and the auto fast path

Evaluates the demo's Phase I policy on its training variants (the demo's tasks, evaluation layouts and
episode count) at each number of denoising steps (``num_denoising_steps``, ``--denoising-steps`` on
``xvla eval``) under each setting: ``fp32`` (eager float32) and ``fast`` (``fast=True``: what
:func:`xvla.hardware.choose` picks here). It also times one chunk at batch 1 for each cell. Each cell is
written to ``OUTPUT/cells/`` when it finishes and skipped when it is already there, so an interrupted run
resumes. Success comes with its 95% Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

SETTINGS = ("fp32", "fast")


def load(checkpoint: Path, setting: str, tokenizer):
    from xvla import XVLAPolicy

    if setting == "fp32":
        return XVLAPolicy.from_pretrained(checkpoint, tokenizer=tokenizer, dtype="float32")
    return XVLAPolicy.from_pretrained(checkpoint, tokenizer=tokenizer, fast=True, compile_batch_sizes=(1, 2))


def chunk_ms(policy, steps: int, repeats: int) -> float:
    """Median time of one chunk at batch 1 (after one untimed chunk that compiles)."""
    model, cfg = policy.model, policy.config
    height, width = cfg.image_size
    inputs = dict(
        input_ids=torch.ones(1, cfg.tokenizer_max_length, dtype=torch.long),
        image_input=torch.zeros(1, cfg.total_image_views, 3, height, width),
        image_mask=torch.ones(1, cfg.total_image_views, dtype=torch.bool),
        domain_id=torch.full((1,), cfg.domain_id or 0, dtype=torch.long),
        proprio=torch.zeros(1, model.dim_proprio),
    )
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            policy.generate(inputs, steps=steps)
            if i:
                times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def run_cell(args, info: dict, policy, setting: str, steps: int) -> dict:
    from xvla.sim.evaluate import EvalConfig, evaluate

    s = info["settings"]
    successes = episodes = 0
    for variant in info["train_variants"]:
        cfg = EvalConfig(
            policy="-",
            tasks=info["tasks"],
            variant=variant,
            episodes_per_task=args.episodes or s["eval_episodes"],
            seed=1000,
            num_envs=s["workers"],
            max_steps=s["eval_max_steps"],
            videos=0,
            image_size=s["image_size"],
            output=str(args.output / "eval" / f"{setting}_{steps}_{variant}"),
            denoising_steps=steps,
            progress=False,
        )
        overall = evaluate(cfg, policy=policy)["overall"]
        successes += overall["successes"]
        episodes += overall["episodes"]
    return {
        "setting": setting,
        "steps": steps,
        "successes": successes,
        "episodes": episodes,
        "chunk_ms": chunk_ms(policy, steps, args.repeats),
    }


def print_table(cells: list[dict], machine: str) -> None:
    from xvla.sim.report import wilson_interval

    print(
        f"\nDenoising steps vs closed-loop success, demo Phase I policy on its training variants ({machine})\n"
    )
    print("| setting | steps | success | 95% Wilson | ms / chunk (batch 1) | x fp32 at 10 steps |")
    print("|---|---|---|---|---|---|")
    base = next((c["chunk_ms"] for c in cells if (c["setting"], c["steps"]) == ("fp32", 10)), None)
    for c in sorted(cells, key=lambda c: (SETTINGS.index(c["setting"]), -c["steps"])):
        lo, hi = wilson_interval(c["successes"], c["episodes"])
        ratio = f"{c['chunk_ms'] / base:.2f}" if base else "-"
        print(
            f"| {c['setting']} | {c['steps']} | {c['successes']}/{c['episodes']} | {100 * lo:.0f}-{100 * hi:.0f}% | "
            f"{c['chunk_ms']:.1f} | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--demo", type=Path, default=Path("outputs/demo"), help="the demo's output folder")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 5, 3, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--episodes", type=int, help="episodes per task and variant (default: the demo's)")
    parser.add_argument("--repeats", type=int, default=20, help="timed chunks per cell")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--output", type=Path, default=Path("outputs/steps_vs_success"))
    parser.add_argument(
        "--retime", action="store_true", help="time the finished cells again (success is kept)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from xvla.hardware import probe
    from xvla.sim.demo import build_tokenizer
    from xvla.sim.instructions import INSTRUCTIONS
    from xvla.utils import write_json

    results = args.demo / "report" / "results.json"
    if not results.is_file():
        parser.error(f"{results} is missing: run `make demo` (or `xvla demo --output {args.demo}`) first")
    info = json.loads(results.read_text())
    checkpoint = args.demo / "phase1" / "final"
    tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))
    cells_dir = args.output / "cells"
    cells = []
    for setting in args.settings:
        todo = [k for k in args.steps if not (cells_dir / f"{setting}_{k}.json").is_file()]
        policy = load(checkpoint, setting, tokenizer) if todo or args.retime else None
        for steps in args.steps:
            path = cells_dir / f"{setting}_{steps}.json"
            if not path.is_file():
                write_json(path, run_cell(args, info, policy, setting, steps))
            elif args.retime:  # a quieter machine than the one the episodes ran on
                write_json(
                    path, {**json.loads(path.read_text()), "chunk_ms": chunk_ms(policy, steps, args.repeats)}
                )
            cells.append(json.loads(path.read_text()))
            print(f"  {setting} {steps} steps: {cells[-1]['successes']}/{cells[-1]['episodes']}", flush=True)
    print_table(cells, f"{probe().summary()}; torch threads={args.threads}")


if __name__ == "__main__":
    main()
