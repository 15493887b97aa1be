"""``xvla adapter export``: one robot's domain rows of a run or checkpoint as a small adapter file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from .flags import add_dataclass_flags, dataclass_from_args


@dataclass
class AdapterExportConfig:
    source: str = field(metadata={"help": "a training run folder (its final model) or a checkpoint folder"})
    out: str = field(metadata={"help": "the adapter file to write (.safetensors)"})
    domain: int | None = field(
        default=None, metadata={"help": "the domain to export (default: the checkpoint's)"}
    )
    name: str | None = field(default=None, metadata={"help": "robot name (default: the domain's name)"})
    instruction: str | None = field(default=None, metadata={"help": "the robot's default instruction"})
    control_hz: float | None = field(default=None, metadata={"help": "the robot's control rate"})


def cmd_adapter_export(args: argparse.Namespace) -> int:
    from .adapters import export_adapter
    from .policy import XVLAPolicy

    cfg = dataclass_from_args(AdapterExportConfig, args)
    source = Path(cfg.source)
    if (source / "final").is_dir():  # a run folder: its final model
        source = source / "final"
    policy = XVLAPolicy.from_pretrained(source)
    domain = policy.config.domain_id if cfg.domain is None else cfg.domain
    extra = {
        k: v for k, v in (("instruction", cfg.instruction), ("control_hz", cfg.control_hz)) if v is not None
    }
    out = export_adapter(policy, domain, cfg.out, name=cfg.name, **extra)
    size = out.stat().st_size
    print(f"adapter for domain {domain} of {source} -> {out} ({size / 1024:.1f} KiB)")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "adapter", help="robot adapters: export one domain's soft prompt and heads as a small file"
    )
    actions = p.add_subparsers(dest="adapter_command", required=True)
    e = actions.add_parser(
        "export", help="write one domain's rows and the robot's metadata to a safetensors file"
    )
    add_dataclass_flags(e, AdapterExportConfig, positional=("source", "out"))
    e.set_defaults(func=cmd_adapter_export)
