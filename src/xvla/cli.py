"""The `xvla` command: `xvla convert`, `xvla info`, `xvla smoke` (`xvla demo` and the rest live with their feature)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def cmd_convert(args: argparse.Namespace) -> int:
    from .policy import XVLAPolicy

    policy = XVLAPolicy.from_pretrained(args.src)
    out = policy.save_pretrained(args.dst, format=args.to)
    print(f"converted {args.src} ({policy.checkpoint_format}) -> {out} ({args.to})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoints as ckpt
    from .policy import resolve_checkpoint_dir

    folder = resolve_checkpoint_dir(args.path)
    config, fmt = ckpt.config_from_json(ckpt.read_config_json(folder), folder)
    summary = {
        "path": str(folder),
        "format": fmt,
        "action_mode": config.action_mode,
        "chunk_size": config.chunk_size,
        "hidden_size": config.hidden_size,
        "depth": config.depth,
        "num_domains": config.num_domains,
        "domain_id": config.domain_id,
        "max_state_dim": config.max_state_dim,
        "image_keys": config.image_keys,
        "num_image_views": config.total_image_views,
        "image_size": config.image_size,
        "dtype": config.dtype,
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Build a small model, save it, load it back, predict a chunk and print it (offline, CPU)."""
    import torch

    from .config import XVLAConfig, tiny_florence_config
    from .policy import XVLAPolicy

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    config = XVLAConfig(
        hidden_size=64, depth=2, num_heads=4, num_domains=4, len_soft_prompts=4, dim_time=16, max_len_seq=256,
        chunk_size=8, n_action_steps=8, action_mode="auto", real_action_dim=7, max_action_dim=20,
        max_state_dim=8, florence_config=tiny_florence_config(width=32), image_size=(64, 64),
        image_keys=["observation.images.front", "observation.images.wrist"], empty_cameras=1,
        tokenizer_max_length=16,
    )  # fmt: skip
    out = Path(args.output)
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
    chunk = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(args.seed))
    elapsed = time.perf_counter() - start
    print(f"saved and reloaded a {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M-parameter X-VLA at {out}")
    print(f"action chunk {tuple(chunk.shape)} (chunk x real action dim), first 3 steps:")
    for row in chunk[0, :3].tolist():
        print("  " + " ".join(f"{v:+.3f}" for v in row))
    print(f"done in {elapsed:.2f}s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvla", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a checkpoint between formats (xvla, lerobot, official)")
    p.add_argument("src", help="checkpoint folder (any supported format) or Hub id")
    p.add_argument("dst", help="output folder")
    p.add_argument("--to", choices=["xvla", "lerobot", "official"], default="xvla")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="print what a checkpoint folder holds")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("smoke", help="end-to-end smoke run: build, save, load, predict (offline, CPU)")
    p.add_argument("--output", default="outputs/smoke_checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_smoke)
    _register_optional(sub)
    return parser


def _register_optional(sub) -> None:
    """Sub-commands that live with their feature (each module exposes ``register(subparsers)``)."""
    import importlib

    for module in ("xvla.serve.cli", "xvla.train.cli", "xvla.sim.cli", "xvla.export_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # feature not present in this install
            raise
        mod.register(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
        print(f"xvla {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
