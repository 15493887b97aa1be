"""The `xvla` command: `xvla convert`, `xvla info`, `xvla smoke` (`xvla demo` and the rest live with their feature)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .flags import FlagParser, add_dataclass_flags, dataclass_from_args
from .utils import Interrupted, UserFacingError, keep_freed_memory


@dataclass
class ConvertConfig:
    src: str = field(metadata={"help": "checkpoint folder (any supported format) or Hub id"})
    dst: str = field(metadata={"help": "output folder (written atomically)"})
    to: str = field(default="xvla", metadata={"help": "xvla, lerobot or official"})
    overwrite: bool = field(default=False, metadata={"help": "replace DST if it exists"})


@dataclass
class InfoConfig:
    path: str | None = field(
        default=None, metadata={"help": "checkpoint folder or Hub id, or an adapter file (.safetensors)"}
    )
    hardware: bool = field(
        default=False,
        metadata={
            "help": "print what this machine can run (CPU matrix units, CUDA) and the setting --fast picks, and why"
        },
    )
    adapters: list[str] | None = field(
        default=None,
        metadata={
            "help": "robot adapters to load into the checkpoint first, NAME=PATH,NAME=PATH: the domain table then "
            "lists them and the ids left free"
        },
    )


@dataclass
class SmokeConfig:
    output: str = field(
        default="outputs/smoke_checkpoint", metadata={"help": "where the tiny checkpoint is saved"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the random weights and inputs"})


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoints import FORMATS
    from .policy import XVLAPolicy
    from .utils import atomic_directory

    cfg = dataclass_from_args(ConvertConfig, args)
    if cfg.to not in FORMATS:
        raise ValueError(f"--to {cfg.to!r} is unknown: choose one of {list(FORMATS)}")
    policy = XVLAPolicy.from_pretrained(cfg.src)
    # Written under a temporary name and renamed when complete: a failure leaves no half-written folder.
    with atomic_directory(cfg.dst, overwrite=cfg.overwrite) as tmp:
        policy.save_pretrained(tmp, format=cfg.to)
    print(f"converted {cfg.src} ({policy.checkpoint_format}) -> {cfg.dst} ({cfg.to})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoints as ckpt
    from .domains import describe_domains, is_released_base
    from .hub import resolve_checkpoint_dir

    cfg = dataclass_from_args(InfoConfig, args)
    if cfg.hardware:
        from .hardware import report

        print(report())
        if cfg.path is None:
            return 0
        print()
    if cfg.path is None:
        raise ValueError("give a checkpoint PATH (folder, Hub id or adapter file), or --hardware")
    if Path(cfg.path).is_file():
        from .adapters import describe_adapter

        print(json.dumps(describe_adapter(cfg.path), indent=2))
        return 0
    folder = resolve_checkpoint_dir(cfg.path)
    config, fmt = ckpt.config_from_json(ckpt.read_config_json(folder), folder)
    fields = (
        "action_mode",
        "real_action_dim",
        "chunk_size",
        "n_action_steps",
        "num_denoising_steps",
        "hidden_size",
        "depth",
        "num_domains",
        "max_state_dim",
        "image_keys",
        "image_size",
        "resize_imgs_with_padding",
        "empty_cameras",
        "tokenizer_name",
        "tokenizer_max_length",
        "dtype",
    )
    data = config.to_dict()
    summary = {"path": str(folder), "format": fmt, **{k: data[k] for k in fields}}
    summary["num_image_views"] = config.total_image_views
    summary["tokenizer_files"] = sorted(p.name for p in folder.iterdir() if p.name in ckpt.TOKENIZER_FILES)
    summary["weights"] = ckpt.verify_weights(folder)  # a damaged file stops here, not at load time
    released = is_released_base(config)  # of the checkpoint: loading adapters below records a table
    policy = _with_adapters(folder, cfg.adapters) if cfg.adapters else None
    summary["domains"] = describe_domains(policy.config if policy else config, released=released)
    if policy is not None:
        summary["domains"]["adapters"] = {
            a.name: {
                "domain_id": a.domain_id,
                "action_mode": a.metadata.get("action_mode"),
                "action_dim": policy.action_widths([a.domain_id])[0],
                "path": a.path,
            }
            for a in policy.adapters.values()
        }
    print(json.dumps(summary, indent=2))
    return 0


def _with_adapters(folder: Path, items: list[str]) -> Any:
    """The checkpoint with the adapters ``items`` (NAME=PATH) loaded, as ``xvla serve --adapters`` would."""
    from .adapters import parse_adapter_specs
    from .policy import XVLAPolicy

    policy = XVLAPolicy.from_pretrained(folder)
    for name, path in parse_adapter_specs(items):
        policy.load_adapter(path, name=name)
    return policy


def cmd_smoke(args: argparse.Namespace) -> int:
    """Build a small model, save it, load it back, predict a chunk and print it (offline, CPU)."""
    import torch

    from .config import XVLAConfig, tiny_florence_config
    from .policy import XVLAPolicy

    torch.set_num_threads(1)
    config = XVLAConfig(
        hidden_size=64,
        depth=2,
        num_heads=4,
        num_domains=4,
        len_soft_prompts=4,
        dim_time=16,
        max_len_seq=256,
        chunk_size=8,
        n_action_steps=8,
        action_mode="auto",
        real_action_dim=7,
        max_action_dim=20,
        max_state_dim=8,
        florence_config=tiny_florence_config(width=32),
        image_size=(64, 64),
        image_keys=["observation.images.front", "observation.images.wrist"],
        empty_cameras=1,
        tokenizer_max_length=16,
    )
    cfg = dataclass_from_args(SmokeConfig, args)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.output)
    start = time.perf_counter()
    XVLAPolicy(config).save_pretrained(out)
    policy = XVLAPolicy.from_pretrained(out)
    batch = {
        "observation.images.front": torch.randint(0, 256, (1, 3, 96, 128), dtype=torch.uint8),
        "observation.images.wrist": torch.randint(0, 256, (1, 3, 48, 64), dtype=torch.uint8),
        "observation.state": torch.randn(1, 8),
        "observation.language.tokens": torch.randint(3, 1000, (1, 16)),
        "domain_id": 1,
    }
    chunk = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(cfg.seed))
    elapsed = time.perf_counter() - start
    print(
        f"saved and reloaded a {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M-parameter X-VLA at {out}"
    )
    print(f"action chunk {tuple(chunk.shape)} (chunk x real action dim), first 3 steps:")
    for row in chunk[0, :3].tolist():
        print("  " + " ".join(f"{v:+.3f}" for v in row))
    print(f"done in {elapsed:.2f}s")
    return 0


# Sub-commands that live with their feature: name -> (the module whose ``register(subparsers)`` adds it, its
# help line). Only the module of the command being run is imported (they load torch, transformers or
# fastapi); the others are listed with their help line, so `xvla --help` answers at once.
FEATURE_COMMANDS = {
    "adapter": ("xvla.adapter_cli", "robot adapters: export one domain's soft prompt and heads as a small file"),
    "export": ("xvla.export_cli", "export a checkpoint to ONNX (encoder + denoising step, dynamic batch)"),
    "serve": ("xvla.serve.cli", "serve a policy over HTTP (official POST /act API, native POST /v1/act, dynamic batching)"),
    "train": ("xvla.train.cli", "train / fine-tune on LeRobot datasets (recipes: official, lerobot, prompt, lora)"),
    "demo": ("xvla.sim.cli", "the whole recipe on a CPU: demonstrations, Phase I, Phase II (prompts), evaluation, report"),
    "eval-offline": ("xvla.sim.cli", "per-dimension action error of a checkpoint on a held-out dataset split, with "
                                     "trajectory plots"),
    "gen-demos": ("xvla.sim.cli", "generate scripted Meta-World demonstrations into LeRobot v3.0 datasets (one per "
                                  "embodiment variant)"),
    "eval": ("xvla.sim.cli", "closed-loop Meta-World evaluation of a checkpoint (success rates, videos, JSON + markdown)"),
    "tokenizer": ("xvla.tokenizer_cli", "copy or build a local tokenizer (offline: no Hugging Face Hub needed)"),
}  # fmt: skip


def build_parser(command: str | None = "*") -> FlagParser:
    """The ``xvla`` parser: every sub-command in full (``"*"``), or only ``command`` in full and the others as
    their help line (what :func:`main` builds; ``None``: all as help lines, for ``xvla --help``)."""
    parser = FlagParser(prog="xvla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [
        ("convert", ConvertConfig, ("src", "dst"), cmd_convert, "convert a checkpoint between formats (xvla, lerobot, official)"),
        ("info", InfoConfig, ("path",), cmd_info, "what a checkpoint holds (settings, cameras, domains); --hardware: this machine"),
        ("smoke", SmokeConfig, (), cmd_smoke, "end-to-end smoke run: build, save, load, predict (offline, CPU)"),
    ]  # fmt: skip
    for name, cls, positional, func, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        add_dataclass_flags(p, cls, positional=positional, optional_positional=name == "info")
        p.set_defaults(func=func)
    _register_features(sub, command)
    return parser


def _register_features(sub, command: str | None) -> None:
    import importlib

    for module in dict.fromkeys(m for m, _ in FEATURE_COMMANDS.values()):
        names = [n for n, (m, _) in FEATURE_COMMANDS.items() if m == module]
        if command != "*" and command not in names:
            if _present(module):
                for name in names:
                    sub.add_parser(name, help=FEATURE_COMMANDS[name][1])
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # feature not present in this install
            raise
        mod.register(sub)


def _present(module: str) -> bool:
    """Whether a feature's module is installed, without importing its package (xvla.sim loads numpy & co)."""
    import importlib.util

    package, _, _ = module.rpartition(".")
    return importlib.util.find_spec(package if package != "xvla" else module) is not None


def _command_word(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not a flag), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


# Mistakes and failures that are explained to the user in one line (no traceback). Anything else is a bug.
USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, UserFacingError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command owns its process, so it may set the allocator (no page faults on re-allocated activations);
    # a library user's host program decides for itself.
    keep_freed_memory()
    args = build_parser(_command_word(argv)).parse_args(argv)
    try:
        return args.func(args)
    except Interrupted as exc:  # Ctrl-C or SIGTERM: one exit code for both, as shells and schedulers expect
        print(f"xvla {args.command}: {exc}", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"xvla {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xvla {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
