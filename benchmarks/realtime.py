"""Real-time execution under inference delay, in simulated time (results do not depend on this machine).

Meta-World (the ``xvla demo`` tasks, sawyer) with a policy trained by the demo recipe; every inference
takes ``delay`` control steps of simulated time while the robot keeps executing (or holds, for
``sync``). For each (strategy, delay) cell: success rate with a 95% Wilson interval, mean episode
length, mean / max action jerk, mean / max jump at chunk switches and idle steps per episode, measured
on the simulator's xyz commands (x 1 cm per step).

    # 1. the policy: demonstrations + Phase I of the demo recipe, with 32-action chunks (~20-60 min on 2 cores)
    python benchmarks/realtime.py train --output outputs/realtime_policy
    # 2. the grid (resumable: each finished cell is appended to OUTPUT/cells.jsonl and skipped on a re-run)
    python benchmarks/realtime.py run --policy outputs/realtime_policy/phase1/checkpoints/001200/pretrained_model \
        --output outputs/realtime --guided-delays 5,10
    # 3. table, plot and side-by-side video
    python benchmarks/realtime.py report --output outputs/realtime --docs docs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

STRATEGIES = ["sync", "replace", "blend", "ensemble", "rtc"]
DELAYS = [0, 2, 5, 10]
TASKS = "button-press-topdown,drawer-close,handle-press"
VIDEO_CELLS = [("sync", 5), ("replace", 5), ("rtc", 5)]  # recorded: the first episode of the first task


# ---------------------------------------------------------------------------------------------- training
def train_policy(output: Path, chunk_size: int, n_action_steps: int, steps: int) -> Path:
    """The demo recipe's demonstrations and Phase I on the sawyer variant, with longer chunks."""
    import torch

    from xvla.sim.demo import DemoSettings, _train, build_tokenizer, model_fields
    from xvla.sim.gen_demos import DemoConfig, generate_demonstrations
    from xvla.sim.instructions import INSTRUCTIONS, resolve_tasks
    from xvla.sim.variants import get_variant

    torch.set_num_threads(1)  # the machine is shared
    s = DemoSettings(
        output=str(output), chunk_size=chunk_size, n_action_steps=n_action_steps, steps_phase1=steps
    )
    variant = get_variant("sawyer")
    demos = output / "demos"
    if not (demos / "summary.json").exists():
        generate_demonstrations(
            DemoConfig(
                output=str(demos),
                tasks=resolve_tasks(s.tasks),
                variants=[variant],
                episodes_per_task=s.episodes_per_task,
                seed=s.seed,
                workers=s.workers,
                image_size=s.image_size,
                overwrite=True,
                progress=False,
            )
        )
    tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))
    fields = model_fields(s, variant.domain_id + 1, variant.action.action_dim, variant.domain_id)
    result, seconds = _train(
        {
            "recipe": "lerobot",
            "policy": fields,
            "output_dir": str(output / "phase1"),
            "steps": s.steps_phase1,
            "save_freq": s.steps_phase1,
            "mixture": {"datasets": [{"root": str(demos / variant.name), "domain_id": variant.domain_id}]},
            "optimizer": {"lr": s.lr_phase1, "vlm_lr_scale": 1.0},
            "scheduler": {
                "warmup_steps": min(100, steps),
                "decay_steps": steps,
                "auto_scale": False,
                "min_lr_ratio": 0.1,
            },
            "batch_size": s.batch_size,
            "num_workers": 0,
            "log_freq": 50,
            "tensorboard": False,
            "device": "cpu",
            "seed": s.seed,
            "keep_last": 1,
        },
        tokenizer,
    )
    print(f"trained in {seconds / 60:.1f} min: {result.final_model_dir}", flush=True)
    return Path(result.final_model_dir)


def load_policy(path: str):
    from xvla import XVLAPolicy
    from xvla.sim.demo import build_tokenizer
    from xvla.sim.instructions import INSTRUCTIONS

    folder = Path(path)
    tokenizer = None
    if not any((folder / name).exists() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))  # the demo's, rebuilt identically
    return XVLAPolicy.from_pretrained(folder, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------- the grid
def cell_key(strategy: str, delay: int, guidance: str) -> str:
    return f"{strategy}{'-guided' if strategy == 'rtc' and guidance == 'guided' else ''}/d{delay}"


def done_cells(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def run_cell(policy, args, strategy: str, delay: int, guidance: str) -> dict[str, Any]:
    from xvla.execution import ExecutionConfig
    from xvla.sim.evaluate import episode_specs
    from xvla.sim.instructions import resolve_tasks
    from xvla.sim.rollout import EpisodeSpec, run_rollouts

    tasks = resolve_tasks(args.tasks)
    record = (strategy, delay) in VIDEO_CELLS and guidance == "inpaint"
    specs = [
        EpisodeSpec(s.task, s.index, s.seed, record and s.task == tasks[0] and s.index == 0)
        for s in episode_specs(tasks, args.episodes_per_task, args.seed, 0)
    ]
    config = ExecutionConfig(strategy, execute_steps=args.execute_steps, guidance=guidance)
    start = time.perf_counter()
    results, timings = run_rollouts(
        policy,
        specs,
        _variant(args),
        num_envs=args.num_envs,
        max_steps=args.max_steps,
        noise_seed=args.seed,
        execution=config,
        delay_steps=delay,
        progress=False,
    )
    for r in results:
        if r.frames:
            np.savez_compressed(
                Path(args.output) / f"frames_{cell_key(strategy, delay, guidance).replace('/', '_')}.npz",
                frames=np.stack(r.frames),
                success=r.success,
            )
    episodes = [
        {"task": r.task, "index": r.index, "success": r.success, "length": r.length, **r.motion}
        for r in results
    ]
    return {
        "key": cell_key(strategy, delay, guidance),
        "strategy": strategy,
        "guidance": guidance,
        "delay": delay,
        "episodes": episodes,
        "chunks": timings["chunks"],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def _variant(args):
    from xvla.sim.variants import get_variant

    return get_variant("sawyer").with_image_size(args.image_size)


def run_grid(args) -> None:
    import torch

    torch.set_num_threads(1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cells_file = out / "cells.jsonl"
    policy = load_policy(args.policy)
    done = done_cells(cells_file)
    grid = [(s, d, "inpaint") for d in args.delays for s in args.strategies]
    grid += [("rtc", d, "guided") for d in args.guided_delays]
    for strategy, delay, guidance in grid:
        key = cell_key(strategy, delay, guidance)
        if key in done:
            continue
        cell = run_cell(policy, args, strategy, delay, guidance)
        with cells_file.open("a") as f:
            f.write(json.dumps(cell) + "\n")
        s = summarize(cell)
        print(
            f"{key:18s} success {s['successes']}/{s['episodes']}  length {s['mean_length']:.1f}  "
            f"max jump {s['max_switch_jump']:.3f}  idle {s['idle_steps']:.1f}  ({cell['wall_s']:.0f} s)",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------- report
def summarize(cell: dict[str, Any]) -> dict[str, Any]:
    from xvla.sim.report import wilson_interval

    eps = cell["episodes"]
    k, n = sum(e["success"] for e in eps), len(eps)
    lo, hi = wilson_interval(k, n)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "ci95": (lo, hi),
        "mean_length": float(np.mean([e["length"] for e in eps])),
        "mean_jerk": float(np.mean([e["mean_jerk"] for e in eps])),
        "max_jerk": float(np.max([e["max_jerk"] for e in eps])),
        "mean_switch_jump": float(np.mean([e["mean_switch_jump"] for e in eps])),
        "max_switch_jump": float(np.max([e["max_switch_jump"] for e in eps])),
        "idle_steps": float(np.mean([e["idle_steps"] for e in eps])),
    }


def load_cells(out: Path) -> list[dict[str, Any]]:
    cells = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines() if line.strip()]
    order = {name: i for i, name in enumerate(STRATEGIES)}
    return sorted(cells, key=lambda c: (c["delay"], order[c["strategy"]], c["guidance"] != "inpaint"))


def table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| delay | strategy | success | 95% CI | mean length | mean jerk | max jerk | mean / max jump at switch | idle steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        s = summarize(c)
        name = c["strategy"] + (" (guided)" if c["guidance"] == "guided" and c["strategy"] == "rtc" else "")
        lo, hi = s["ci95"]
        lines.append(
            f"| {c['delay']} | {name} | {s['successes']}/{s['episodes']} ({100 * s['success_rate']:.0f}%) | "
            f"{100 * lo:.0f}-{100 * hi:.0f}% | {s['mean_length']:.1f} | {s['mean_jerk']:.3f} | {s['max_jerk']:.2f} | "
            f"{s['mean_switch_jump']:.3f} / {s['max_switch_jump']:.2f} | {s['idle_steps']:.1f} |"
        )
    return "\n".join(lines)


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for i, strategy in enumerate(STRATEGIES):
        mine = [c for c in cells if c["strategy"] == strategy and c["guidance"] == "inpaint"]
        if not mine:
            continue
        d = np.array([c["delay"] for c in mine]) + (i - 2) * 0.12  # side by side, not on top of each other
        s = [summarize(c) for c in mine]
        rate = np.array([x["success_rate"] for x in s]) * 100
        err = np.array(
            [[r - 100 * x["ci95"][0], 100 * x["ci95"][1] - r] for r, x in zip(rate, s, strict=True)]
        ).T
        axes[0].errorbar(d, rate, yerr=err, marker="o", capsize=3, label=strategy)
        axes[1].plot(d, [x["mean_switch_jump"] for x in s], marker="o", label=strategy)
        axes[2].plot(d, [x["mean_jerk"] for x in s], marker="o", label=strategy)
    titles = ["success rate (%), 95% Wilson interval", "mean jump at chunk switches", "mean action jerk"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("inference delay (control steps)")
        ax.set_xticks(DELAYS)
    axes[0].set_ylim(0, 105)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def side_by_side(out: Path, path: Path) -> Path | None:
    """The recorded episodes of VIDEO_CELLS next to each other (main camera, labelled)."""
    from PIL import Image, ImageDraw

    from xvla.sim.evaluate import write_video

    clips = []
    for strategy, delay in VIDEO_CELLS:
        f = out / f"frames_{cell_key(strategy, delay, 'inpaint').replace('/', '_')}.npz"
        if f.exists():
            data = np.load(f)
            main = data["frames"][
                :, :, : data["frames"].shape[1]
            ]  # the first (main) camera of the side-by-side frame
            clips.append((f"{strategy} d={delay} {'ok' if data['success'] else 'fail'}", main))
    if not clips:
        return None
    length = max(len(c) for _, c in clips)
    frames = []
    for t in range(length):
        tiles = []
        for label, clip in clips:
            tile = Image.fromarray(np.ascontiguousarray(clip[min(t, len(clip) - 1)])).resize(
                (192, 192), Image.NEAREST
            )
            ImageDraw.Draw(tile).text((4, 4), f"{label} t={min(t, len(clip) - 1)}", fill=(255, 255, 0))
            tiles.append(np.asarray(tile))
        frames.append(np.concatenate(tiles, axis=1))
    return write_video(path, frames, fps=20, min_height=192)


def report(args) -> None:
    out = Path(args.output)
    cells = load_cells(out)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    text = table(cells)
    (out / "table.md").write_text(text + "\n")
    print(text)
    plot(cells, docs / "realtime.png")
    video = side_by_side(out, out / "realtime_side_by_side.mp4")
    if video is not None:
        size = Path(video).stat().st_size
        print(f"video: {video} ({size / 1e6:.2f} MB)")
        if size < 2e6:
            import shutil

            shutil.copy(video, docs / "realtime_side_by_side.mp4")


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as the `xvla` commands do
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the benchmark policy (demo recipe, Phase I on sawyer)")
    t.add_argument("--output", default="outputs/realtime_policy")
    t.add_argument("--chunk-size", type=int, default=32)
    t.add_argument("--n-action-steps", type=int, default=8)
    t.add_argument("--steps", type=int, default=1200)
    r = sub.add_parser("run", help="run the (strategy x delay) grid; resumable")
    r.add_argument("--policy", required=True)
    r.add_argument("--output", default="outputs/realtime")
    r.add_argument("--tasks", default=TASKS)
    r.add_argument("--episodes-per-task", type=int, default=10)
    r.add_argument("--strategies", type=lambda x: x.split(","), default=STRATEGIES)
    r.add_argument("--delays", type=lambda x: [int(v) for v in x.split(",")], default=DELAYS)
    r.add_argument(
        "--guided-delays",
        type=lambda x: [int(v) for v in x.split(",") if v],
        default=[],
        help="also run rtc with guided sampling at these delays",
    )
    r.add_argument(
        "--execute-steps", type=int, default=8, help="actions per chunk before the next (default 8)"
    )
    r.add_argument("--max-steps", type=int, default=150)
    r.add_argument("--num-envs", type=int, default=2)
    r.add_argument("--image-size", type=int, default=64)
    r.add_argument("--seed", type=int, default=1000)
    g = sub.add_parser("report", help="table, plot and video from a finished (or partial) grid")
    g.add_argument("--output", default="outputs/realtime")
    g.add_argument("--docs", default="docs")
    args = p.parse_args(argv)
    if args.command == "train":
        train_policy(Path(args.output), args.chunk_size, args.n_action_steps, args.steps)
    elif args.command == "run":
        run_grid(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
