"""`xvla train`: flags in lerobot-train's dotted style, a config file, and named recipes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from .. import flags
from ..config import XVLAConfig
from .config import (
    RECIPES,
    TrainConfig,
    build_train_config,
    convert,
    deep_merge,
    flat_fields,
    load_config_file,
)

DESCRIPTION = """Train or fine-tune an X-VLA policy on LeRobot datasets (one, or a weighted mixture).

Recipes (--recipe), each a set of defaults that the config file and flags override:
  official  SPEC 5 Phase II: AdamW betas (0.9, 0.95), clip 1.0, lr 1e-4, VLM and soft prompts at 0.1x;
            the first 1000 steps train only soft prompts + action heads (a real freeze), then the rest
            warms up over 1000 steps; cosine to 0.1x
  lerobot   LeRobot's defaults: betas (0.9, 0.99), clip 10, warm-up 1000, cosine to 2.5e-6 at 30k steps
            (shrunk when --steps is smaller), VLM at 0.1x, everything trains
  prompt    Phase II new embodiment: a new domain id; only its soft prompt and domain heads train
  lora      peft LoRA r=8 on every linear layer + soft prompts + action heads (~1% of the weights)
"""

EXAMPLES = """examples:
  xvla train --dataset.root=data/pick --policy.path=lerobot/xvla-base --recipe=official \\
      --steps=20000 --batch_size=16 --output_dir=outputs/pick
  xvla train --config=configs/mixture_example.yaml
  xvla train --output_dir=outputs/pick --resume --steps=30000
  torchrun --nproc_per_node=4 -m xvla.cli train --config=configs/official_finetune.yaml
"""

_TOP_LEVEL_ONLY = {"policy"}


def _xvla_config_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(XVLAConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(XVLAConfig)}


def _default_text(name: str) -> str:
    node: Any = TrainConfig()
    for part in name.split("."):
        node = getattr(node, part)
    return json.dumps(node) if isinstance(node, (list, dict, tuple)) else str(node)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train / fine-tune on LeRobot datasets (recipes: " + ", ".join(RECIPES) + ")",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        "--config_path",
        dest="config",
        default=None,
        help="training config file (YAML or JSON, nested like the flags)",
    )
    for name, tp in flat_fields().items():
        if name in _TOP_LEVEL_ONLY:
            continue
        kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS, metavar="V")
        if tp is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        text = flags.field_help(TrainConfig, name)
        said = "default" in text  # the help already says what the default means
        p.add_argument(
            f"--{name}", help=text if said else f"{text} (default: {_default_text(name)})".lstrip(), **kwargs
        )
    p.add_argument(
        "--policy.path",
        dest="policy.path",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="checkpoint folder or Hub id to start from (any supported format)",
    )
    p.add_argument("--policy.type", dest="policy.type", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--policy.device", dest="device", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for name, tp in _xvla_config_fields().items():
        kwargs = dict(dest=f"policy.{name}", default=argparse.SUPPRESS, metavar="V")
        if tp is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        text = flags.field_help(XVLAConfig, name)
        p.add_argument(
            f"--policy.{name}", help=f"{text} (overrides the checkpoint's value)".lstrip(), **kwargs
        )
    p.set_defaults(func=cmd_train)


def cli_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line, as a nested dict with typed policy fields."""
    policy_types = _xvla_config_fields()
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in ("func", "command", "config"):
            continue
        if key.startswith("policy."):
            field_name = key.split(".", 1)[1]
            if field_name in ("path", "type"):
                out.setdefault("policy", {})[field_name] = value
            else:
                out.setdefault("policy", {})[field_name] = convert(value, policy_types[field_name], key)
        else:
            out[key] = value
    return out


def resolve_config(config_path: str | None, values: dict[str, Any]) -> TrainConfig:
    file_values = load_config_file(config_path) if config_path else {}
    nested = build_nested(values)
    resume = nested.get("resume", file_values.get("resume", False))
    if str(resume).lower() in ("1", "true", "yes", "on") or resume is True:
        out = nested.get("output_dir", file_values.get("output_dir"))
        if not out:
            raise ValueError("--resume needs --output_dir (the folder of the run to continue)")
        saved = Path(out) / "train_config.json"
        if not saved.is_file():
            raise FileNotFoundError(
                f"--resume: {out} holds no training run (no train_config.json); check --output_dir, or drop --resume "
                "to start a new run there"
            )
        # The interrupted run's settings, then whatever the file and flags change (e.g. --steps).
        file_values = deep_merge(json.loads(saved.read_text()), file_values)
    return build_train_config(file_values, nested)


def build_nested(values: dict[str, Any]) -> dict[str, Any]:
    from .config import nest_dotted

    policy = values.pop("policy", None)
    nested = nest_dotted(values)
    if policy:
        nested["policy"] = policy
    return nested


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = resolve_config(args.config, cli_values(args))
    result = train(cfg)
    if result.final_model_dir is not None and result.is_main:
        final = Path(result.output_dir) / "final"
        final = final if final.is_dir() else result.final_model_dir
        print(f"done: {result.steps} steps; final model {final} (XVLAPolicy.from_pretrained('{final}'))")
    return 0
