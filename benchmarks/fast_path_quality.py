"""How far the fast path's actions are from fp32: parity fixtures (vs LeRobot's recorded actions) and any checkpoint.

    python benchmarks/fast_path_quality.py                                  # the parity fixtures
    python benchmarks/fast_path_quality.py --checkpoints outputs/demo/phase2 --fixtures none

For each checkpoint, the same inputs and noise go through fp32 eager, bf16 eager, the fast path
(bf16, compiled), int8 (``quantize="int8"``, fp32 outside the int8 linears, compiled) and ``fast=True`` (what
:func:`xvla.hardware.choose` picks on this machine). Fixtures use their recorded inputs and compare with the reference's fp32 actions;
other checkpoints get random inputs of their configured shape (batch 4) and are compared with our fp32.
Errors are on the postprocessed actions (gripper channels after the sigmoid, as a robot receives them).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "parity"
KEYS = ("input_ids", "image_input", "image_mask", "domain_id", "proprio")


def fixture_case(name: str) -> tuple[Path, dict, int, torch.Tensor]:
    with safe_open(str(FIXTURES / name / "io.safetensors"), framework="pt") as f:
        io, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    return (
        FIXTURES / name / "checkpoint",
        {k: io[k] for k in (*KEYS, "noise")},
        int(meta["steps"]),
        io["actions"],
    )


def random_case(path: str, batch: int = 4) -> tuple[Path, dict, int, None]:
    from xvla import XVLAPolicy

    cfg = XVLAPolicy.from_pretrained(path).config
    model = XVLAPolicy.from_pretrained(path).model
    height, width = cfg.image_size or (224, 224)
    g = torch.Generator().manual_seed(0)
    vocab = model.vlm.language_model.shared.num_embeddings
    inputs = {
        "input_ids": torch.randint(3, vocab, (batch, cfg.tokenizer_max_length), generator=g),
        "image_input": torch.randn(batch, cfg.total_image_views, 3, height, width, generator=g),
        "image_mask": torch.ones(batch, cfg.total_image_views, dtype=torch.bool),
        "domain_id": torch.full((batch,), cfg.domain_id or 0),
        "proprio": torch.randn(batch, model.dim_proprio, generator=g),
        "noise": torch.randn(batch, cfg.chunk_size, model.dim_action, generator=g),
    }
    return Path(path), inputs, cfg.num_denoising_steps, None


def run(
    path: Path,
    inputs: dict,
    steps: int,
    dtype: str | None,
    compile: bool,
    quantize: str | None = None,
    fast: bool = False,
) -> torch.Tensor:
    from xvla import XVLAPolicy

    batch = inputs["noise"].shape[0]
    overrides = {"dtype": dtype} if dtype else {}
    policy = XVLAPolicy.from_pretrained(
        path, compile=compile, compile_batch_sizes=(batch,), quantize=quantize, fast=fast, **overrides
    )
    return policy.generate(inputs, noise=inputs["noise"], steps=steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = sorted(p.name for p in FIXTURES.iterdir() if (p / "io.safetensors").exists())
    parser.add_argument("--fixtures", nargs="+", default=default, help="fixture names, or 'none'")
    parser.add_argument(
        "--checkpoints", nargs="*", default=[], help="other checkpoint folders (random inputs)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [(n, *fixture_case(n)) for n in args.fixtures if n != "none"]
    cases += [(c, *random_case(c)) for c in args.checkpoints]
    from xvla.hardware import choose, probe

    print(f"{probe().summary()}; torch threads={args.threads}; fast=True here: {choose('cpu').kwargs()}\n")
    print(
        "| checkpoint | batch | compared with | fp32 max / mean | bf16 eager max / mean | fast path max / mean "
        "| int8 max / mean | fast=True max / mean |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, path, inputs, steps, reference in cases:
        fp32 = run(path, inputs, steps, "float32", False)
        base = reference if reference is not None else fp32
        cells = []
        others = [run(path, inputs, steps, "bfloat16", compile) for compile in (False, True)]
        int8 = run(path, inputs, steps, "float32", True, quantize="int8")
        for out in (fp32, *others, int8, run(path, inputs, steps, None, False, fast=True)):
            err = (out - base).abs()
            cells.append(f"{err.max().item():.1e} / {err.mean().item():.1e}")
        label = "LeRobot fp32 (recorded)" if reference is not None else "xvla fp32"
        print(f"| {name} | {inputs['noise'].shape[0]} | {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
