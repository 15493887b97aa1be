"""`xvla gen-demos`, `xvla eval`, `xvla eval-offline` and `xvla demo`: flags from their config dataclasses
(:mod:`xvla.flags`); the simulator is imported only when a command runs."""

from __future__ import annotations

import argparse
import json

from ..flags import add_dataclass_flags, dataclass_from_args, flat_fields


def cmd_gen_demos(args: argparse.Namespace) -> int:
    from .gen_demos import DemoConfig, generate_demonstrations

    config = dataclass_from_args(DemoConfig, args)
    summary = generate_demonstrations(config)
    print(f"{'variant':16s} {'domain':>6s} {'episodes':>8s} {'frames':>7s} {'expert success':>14s}  dataset")
    for name, v in summary["variants"].items():
        tried = sum(t["attempts"] for t in v["tasks"].values())
        rate = f"{v['episodes']}/{tried}" if tried else "-"
        print(f"{name:16s} {v['domain_id']:6d} {v['episodes']:8d} {v['frames']:7d} {rate:>14s}  {v['dataset']}")
    print(f"done in {summary['seconds']:.1f}s; summary: {config.output}/summary.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if getattr(args, "env", "metaworld") == "libero":  # everything LIBERO lives in libero_eval
        from .libero_eval import cli_main

        return cli_main(args)
    if "policy" not in vars(args):  # optional since --env libero also takes --policy.path / --policy.url
        raise ValueError("give the checkpoint (a folder, a Hub id or 'expert') as the first argument")
    from .evaluate import EvalConfig, evaluate, markdown_table

    config = dataclass_from_args(EvalConfig, args)
    report = evaluate(config)
    print(markdown_table(report))
    if args.json:
        print(json.dumps(report["overall"], indent=2))
    print(f"results: {config.output}/results.json, {config.output}/results.md")
    return 0


def register(sub) -> None:
    from .demo import register_demo
    from .evaluate import EvalConfig
    from .gen_demos import DemoConfig
    from .libero_eval import LiberoEvalConfig
    from .offline import register_eval_offline

    register_demo(sub)
    register_eval_offline(sub)
    p = sub.add_parser(
        "gen-demos",
        help="generate scripted Meta-World demonstrations into LeRobot v3.0 datasets (one per embodiment variant)",
        description="Run Meta-World's scripted experts on seeded layouts and keep the successful episodes, "
        "one LeRobot v3.0 dataset per embodiment variant (OUTPUT/<variant>).",
    )
    add_dataclass_flags(p, DemoConfig, skip=("start_method",), aliases={"output": ["-o"]})
    p.set_defaults(func=cmd_gen_demos)

    p = sub.add_parser(
        "eval",
        help="closed-loop Meta-World evaluation of a checkpoint (success rates, videos, JSON + markdown)",
        description="Roll out a checkpoint (or 'expert', Meta-World's scripted policies) on Meta-World tasks as "
        "one embodiment variant, in parallel simulators, with deterministic seeds.",
    )
    # One parser, two settings dataclasses: EvalConfig (Meta-World), then LIBERO's own fields.
    add_dataclass_flags(p, EvalConfig, positional=("policy",), skip=("start_method",), aliases={"output": ["-o"]},
                        optional_positional=True)  # fmt: skip
    shared = (*flat_fields(EvalConfig), "start_method")
    add_dataclass_flags(p, LiberoEvalConfig, skip=shared, aliases={"policy_url": ["--policy.url"]})
    p.add_argument("--policy.path", dest="policy", default=argparse.SUPPRESS, help="checkpoint folder or Hub id")
    p.add_argument("--env", choices=("metaworld", "libero"), default="metaworld", help="simulator (default: metaworld)")
    p.add_argument("--json", action="store_true", help="also print the overall numbers as JSON")
    p.set_defaults(func=cmd_eval)
