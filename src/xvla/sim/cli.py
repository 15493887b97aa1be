"""`xvla gen-demos`, `xvla eval`, `xvla eval-offline` and `xvla demo` (the simulator is imported only when a command runs)."""

from __future__ import annotations

import argparse
import json


def _size(text: str) -> int:
    value = int(text)
    if not 8 <= value <= 1024 or value % 2:
        raise argparse.ArgumentTypeError(f"image size {value} must be an even number of pixels in [8, 1024]")
    return value


def _key_map(text: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"--key-map entry {item!r} must look like ours=theirs")
        ours, theirs = (s.strip() for s in item.split("=", 1))
        out[ours] = theirs
    return out


def cmd_gen_demos(args: argparse.Namespace) -> int:
    from .demos import DemoConfig, generate_demonstrations
    from .instructions import resolve_tasks
    from .variants import resolve_variants

    config = DemoConfig(
        output=args.output, tasks=resolve_tasks(args.tasks), variants=resolve_variants(args.variants),
        episodes_per_task=args.episodes_per_task, seed=args.seed, workers=args.workers, max_steps=args.max_steps,
        image_size=args.image_size, max_attempts_factor=args.max_attempts_factor,
        privileged_state=args.privileged_state, overwrite=args.overwrite, progress=not args.no_progress,
    )  # fmt: skip
    summary = generate_demonstrations(config)
    print(f"{'variant':16s} {'domain':>6s} {'episodes':>8s} {'frames':>7s} {'expert success':>14s}  dataset")
    for name, v in summary["variants"].items():
        tried = sum(t["attempts"] for t in v["tasks"].values())
        rate = f"{v['episodes']}/{tried}" if tried else "-"
        print(
            f"{name:16s} {v['domain_id']:6d} {v['episodes']:8d} {v['frames']:7d} {rate:>14s}  {v['dataset']}"
        )
    print(f"done in {summary['seconds']:.1f}s; summary: {args.output}/summary.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.env == "libero":  # everything LIBERO lives in libero_eval
        from .libero_eval import cli_main

        return cli_main(args)
    args.policy = args.policy or args.policy_path
    if args.policy is None:
        raise SystemExit("xvla eval: give the checkpoint (a folder, a Hub id or 'expert') as the first argument")
    from .evaluate import EvalConfig, evaluate
    from .instructions import resolve_tasks

    config = EvalConfig(
        policy=args.policy, tasks=resolve_tasks(args.tasks), variant=args.variant,
        episodes_per_task=args.episodes_per_task, seed=args.seed, num_envs=args.num_envs, max_steps=args.max_steps,
        videos=args.videos, output=args.output, device=args.device, domain_id=args.domain_id,
        n_action_steps=args.n_action_steps, denoising_steps=args.denoising_steps,
        action_horizon_s=args.action_horizon_s, image_size=args.image_size, key_map=args.key_map,
        privileged_state=args.privileged_state, progress=not args.no_progress,
    )  # fmt: skip
    report = evaluate(config)
    from .evaluate import markdown_table

    print(markdown_table(report))
    if args.json:
        print(json.dumps(report["overall"], indent=2))
    print(f"results: {args.output}/results.json, {args.output}/results.md")
    return 0


def register(sub) -> None:
    from .demo import register_demo
    from .offline import register_eval_offline

    register_demo(sub)
    register_eval_offline(sub)
    p = sub.add_parser(
        "gen-demos",
        help="generate scripted Meta-World demonstrations into LeRobot v3.0 datasets (one per embodiment variant)",
        description="Run Meta-World's scripted experts on seeded layouts and keep the successful episodes, "
        "one LeRobot v3.0 dataset per embodiment variant (OUTPUT/<variant>).",
    )
    p.add_argument(
        "--output", "-o", default="outputs/demos", help="folder for the datasets (default: %(default)s)"
    )
    p.add_argument(
        "--tasks", default="mt10", help="task set (mt10, mt50, easy) or comma-separated task names"
    )
    p.add_argument(
        "--variants", default="sawyer", help="comma-separated variant names or JSON files, or 'all'"
    )
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="base seed of the layouts (default: %(default)s)")
    p.add_argument(
        "--workers", type=int, default=2, help="parallel simulator processes (default: %(default)s)"
    )
    p.add_argument("--max-steps", type=int, default=200, help="actions per episode before giving up")
    p.add_argument(
        "--image-size", type=_size, default=None, help="camera size in pixels (default: the variant's)"
    )
    p.add_argument("--max-attempts-factor", type=float, default=3.0,
                   help="at most this many attempts per kept episode (default: %(default)s)")  # fmt: skip
    p.add_argument("--privileged-state", action="store_true",
                   help="append object and goal positions to observation.state (21 values instead of 4)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_gen_demos)

    p = sub.add_parser(
        "eval",
        help="closed-loop Meta-World evaluation of a checkpoint (success rates, videos, JSON + markdown)",
        description="Roll out a checkpoint (or 'expert', Meta-World's scripted policies) on Meta-World tasks as "
        "one embodiment variant, in parallel simulators, with deterministic seeds.",
    )
    p.add_argument("policy", nargs="?", default=None, help="checkpoint folder or Hub id, or 'expert'")
    p.add_argument(
        "--tasks", default="mt10", help="task set (mt10, mt50, easy) or comma-separated task names"
    )
    p.add_argument("--variant", default="sawyer", help="embodiment variant name or JSON file")
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument(
        "--seed", type=int, default=1000, help="base seed of the layouts and noise (default: %(default)s)"
    )
    p.add_argument("--num-envs", type=int, default=2, help="parallel simulators (default: %(default)s)")
    p.add_argument("--max-steps", type=int, default=200, help="actions per episode (default: %(default)s)")
    p.add_argument("--videos", type=int, default=3, help="episodes to save as mp4 (default: %(default)s)")
    p.add_argument("--output", "-o", default="outputs/eval")
    p.add_argument("--device", default="cpu")
    p.add_argument("--domain-id", type=int, default=None, help="default: the variant's domain id")
    p.add_argument("--n-action-steps", type=int, default=None, help="actions executed per chunk")
    p.add_argument("--denoising-steps", type=int, default=None)
    p.add_argument("--action-horizon-s", type=float, default=None,
                   help="the chunk spans this many seconds (set when trained with action_horizon_s)")  # fmt: skip
    p.add_argument(
        "--image-size", type=_size, default=None, help="camera size in pixels (default: the variant's)"
    )
    p.add_argument("--key-map", type=_key_map, default={},
                   help="rename observation keys for the policy, e.g. observation.images.main=observation.images.front")  # fmt: skip
    p.add_argument("--privileged-state", action="store_true")
    p.add_argument("--json", action="store_true", help="also print the overall numbers as JSON")
    p.add_argument("--no-progress", action="store_true")
    from .libero_eval import add_arguments as add_libero_arguments

    add_libero_arguments(p)  # --env, --suite, --state-source, --policy.path, --policy.url, --overwrite
    p.set_defaults(func=cmd_eval)
