"""LIBERO simulator cost on this machine, and the projected wall-clock of the full evaluation protocol.

    MUJOCO_GL=egl OMP_WAIT_POLICY=PASSIVE python benchmarks/libero_speed.py [--steps 60] [--camera-size 256]

Measures, for one scene (``--suite``/``--task``): building the env, one reset (init state + 10 settle
steps), a control step without rendering, rendering the two cameras (agentview + wrist), and a step
with both cameras rendered (what a loop that renders every step pays). Then projects, per suite,
the full protocol (50 episodes per task, every episode at its step limit: an upper bound, since
successful episodes stop early) for

- ``render every step``: the official client's loop (one simulator, frames every step);
- ``xvla, CPU policy``: our loop with cameras rendered only at the 1-in-30 query steps, one
  simulator and the policy on this machine's CPU (``--cpu-chunk-s``: the full 0.9B model, float32,
  batch 1, measured in docs/benchmarks.md);
- ``xvla, GPU policy``: ``--num-envs`` simulator processes on as many cores, one batched policy
  call per round on a GPU taking ``--gpu-chunk-s`` (an ASSUMPTION: no GPU was measured here).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

SUITE_EPISODES = {
    "libero_spatial": 500,
    "libero_object": 500,
    "libero_goal": 500,
    "libero_10": 500,
    "libero_90": 4500,
}


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure(args: argparse.Namespace) -> dict[str, float]:
    from xvla.sim.libero import LiberoEnv

    t0 = time.perf_counter()
    env = LiberoEnv(args.suite, args.task, camera_size=args.camera_size, render_images=False)
    env.sim_env  # noqa: B018 - builds the scene
    build = time.perf_counter() - t0
    reset = timed(lambda: env.reset(options={"episode": 0}), 1)
    hold = env.observe(images=False)["observation.state"].astype(np.float64)[:10]
    for _ in range(10):  # the first steps after a reset are slower
        env.step(hold)
    step = timed(lambda: env.step(hold), args.steps)
    render = timed(env.render_cameras, max(3, args.steps // 10))
    env.render_images = True
    step_render = timed(lambda: env.step(hold), max(3, args.steps // 4))
    env.close()
    return {
        "build_s": build,
        "reset_s": reset,
        "step_s": step,
        "render_s": render,
        "step_render_s": step_render,
    }


def projection(m: dict[str, float], suite: str, args: argparse.Namespace) -> dict[str, float]:
    from xvla.sim.libero import MAX_STEPS

    steps = MAX_STEPS[suite]
    queries = math.ceil(steps / args.chunk)
    episodes = SUITE_EPISODES[suite]
    sim_ours = m["reset_s"] + steps * m["step_s"] + queries * m["render_s"]
    sim_every = m["reset_s"] + steps * m["step_render_s"]
    return {
        "episode_every_s": sim_every,
        "episode_ours_s": sim_ours,
        "every_cpu_h": episodes * (sim_every + queries * args.cpu_chunk_s) / 3600,
        "ours_cpu_h": episodes * (sim_ours + queries * args.cpu_chunk_s) / 3600,
        "ours_gpu_h": math.ceil(episodes / args.num_envs) * (sim_ours + queries * args.gpu_chunk_s) / 3600,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--task", type=int, default=0)
    p.add_argument("--steps", type=int, default=60, help="timed control steps (default: %(default)s)")
    p.add_argument("--camera-size", type=int, default=256)
    p.add_argument("--chunk", type=int, default=30, help="actions executed per policy query")
    p.add_argument(
        "--cpu-chunk-s",
        type=float,
        default=9.43,
        help="seconds per chunk of the policy on this CPU (full model, fp32, batch 1; docs/benchmarks.md)",
    )
    p.add_argument(
        "--gpu-chunk-s",
        type=float,
        default=0.15,
        help="ASSUMED seconds per batched chunk on a GPU (not measured here)",
    )
    p.add_argument("--num-envs", type=int, default=8, help="simulator processes on the GPU machine")
    args = p.parse_args()
    m = measure(args)
    print(
        f"LIBERO {args.suite} task {args.task}, cameras 2 x {args.camera_size}x{args.camera_size}, "
        f"{os.cpu_count()} CPU cores, MUJOCO_GL={os.environ.get('MUJOCO_GL')}\n"
    )
    print("| measure | seconds |\n|---|---|")
    for key, label in (
        ("build_s", "build the env"),
        ("reset_s", "reset (init state + 10 settle steps)"),
        ("step_s", "control step, no rendering"),
        ("render_s", "render both cameras"),
        ("step_render_s", "control step + both cameras"),
    ):
        print(f"| {label} | {m[key]:.4f} |")
    print(
        f"\nFull protocol, every episode at its step limit (upper bound); policy {args.cpu_chunk_s:.2f} s/chunk on "
        f"CPU, {args.gpu_chunk_s:.2f} s/batched chunk on a GPU (assumed), {args.num_envs} simulators there.\n"
    )
    print(
        "| suite | episodes | s/episode, render every step | s/episode, xvla | hours: render every step + CPU policy "
        "| hours: xvla + CPU policy | hours: xvla + GPU policy |"
    )
    print("|---|---|---|---|---|---|---|")
    for suite in SUITE_EPISODES:
        r = projection(m, suite, args)
        print(
            f"| {suite} | {SUITE_EPISODES[suite]} | {r['episode_every_s']:.0f} | {r['episode_ours_s']:.0f} | "
            f"{r['every_cpu_h']:.1f} | {r['ours_cpu_h']:.1f} | {r['ours_gpu_h']:.2f} |"
        )


if __name__ == "__main__":
    main()
