"""`xvla gen-demos`, `xvla eval`, `xvla eval-offline` and `xvla demo`: flags from their config dataclasses
(:mod:`xvla.flags`); the simulator is imported only when a command runs."""

from __future__ import annotations

import argparse
import json
import warnings
from typing import TYPE_CHECKING, Any

from ..flags import add_dataclass_flags, dataclass_from_args, flat_fields

if TYPE_CHECKING:
    from .libero_eval import LiberoEvalConfig


def cmd_gen_demos(args: argparse.Namespace) -> int:
    from .gen_demos import DemoConfig, generate_demonstrations

    config = dataclass_from_args(DemoConfig, args)
    summary = generate_demonstrations(config)
    print(f"{'variant':16s} {'domain':>6s} {'episodes':>8s} {'frames':>7s} {'expert success':>14s}  dataset")
    for name, v in summary["variants"].items():
        tried = sum(t["attempts"] for t in v["tasks"].values())
        rate = f"{v['episodes']}/{tried}" if tried else "-"
        print(
            f"{name:16s} {v['domain_id']:6d} {v['episodes']:8d} {v['frames']:7d} {rate:>14s}  {v['dataset']}"
        )
    print(f"done in {summary['seconds']:.1f}s; summary: {config.output}/summary.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if getattr(args, "env", "metaworld") == "libero":
        return cmd_eval_libero(args)
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


# Flags of `xvla eval` that only Meta-World understands: an error with --env libero, not silently ignored.
METAWORLD_ONLY = (
    "variant",
    "image_size",
    "key_map",
    "privileged_state",
    "action_horizon_s",
    "execution",
    "delay_steps",
    "dtype",
    "compile",
)


def cmd_eval_libero(args: argparse.Namespace) -> int:
    """``xvla eval --env libero ...``: run, print the markdown table, say where the files are."""
    from .episode_store import EPISODES_FILE
    from .libero_eval import DomainIdWarning, evaluate_libero, markdown_table
    from .report import RESULTS_JSON, RESULTS_MD

    cfg = libero_config_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainIdWarning)  # printed below, after the table
        report = evaluate_libero(cfg)
    print(markdown_table(report))
    for message in report["warnings"]:
        print(f"warning: {message}")
    if getattr(args, "json", False):
        print(json.dumps(report["overall"], indent=2))
    print(f"results: {cfg.output}/{RESULTS_JSON}, {cfg.output}/{RESULTS_MD}, {cfg.output}/{EPISODES_FILE}")
    return 0


def libero_config_from_args(args: argparse.Namespace) -> LiberoEvalConfig:
    """The LIBERO config from ``xvla eval`` flags: the flags given, LIBERO's defaults for the rest."""
    from dataclasses import fields

    from ..flags import from_dict
    from .libero_eval import NO_POLICY, LiberoEvalConfig

    given = vars(args)
    wrong = [f"--{k.replace('_', '-')}" for k in METAWORLD_ONLY if k in given]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: Meta-World flag(s), not used by --env libero; drop them")
    values = {f.name: given[f.name] for f in fields(LiberoEvalConfig) if f.name in given}
    path = given.get("policy")
    if path is None and given.get("policy_url") is None:
        raise ValueError(NO_POLICY)
    values["policy"] = None if given.get("policy_url") else path
    if "tasks" in values:
        values["tasks"] = parse_task_ids(values["tasks"])
    values.setdefault("output", f"outputs/libero/{values.get('suite', 'libero_spatial')}")
    return from_dict(LiberoEvalConfig, values)


def parse_task_ids(text: Any) -> list[int] | None:
    """``"0,3"`` / ``"3"`` / ``"all"`` (or a list) -> task ids; None means every task."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    items = text if isinstance(text, (list, tuple)) else str(text).replace(" ", "").split(",")
    try:
        return [int(t) for t in items if str(t) != ""]
    except ValueError:
        raise ValueError(f"--tasks {text!r}: give LIBERO task ids like 0,3 (or 'all')") from None


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
    add_dataclass_flags(
        p,
        EvalConfig,
        positional=("policy",),
        skip=("start_method",),
        aliases={"output": ["-o"]},
        optional_positional=True,
    )
    shared = (*flat_fields(EvalConfig), "start_method")
    add_dataclass_flags(p, LiberoEvalConfig, skip=shared, aliases={"policy_url": ["--policy.url"]})
    p.add_argument(
        "--policy.path", dest="policy", default=argparse.SUPPRESS, help="checkpoint folder or Hub id"
    )
    p.add_argument(
        "--env", choices=("metaworld", "libero"), default="metaworld", help="simulator (default: metaworld)"
    )
    p.add_argument("--json", action="store_true", help="also print the overall numbers as JSON")
    p.set_defaults(func=cmd_eval)
