"""`xvla export CHECKPOINT OUT --format onnx`: the command-line side of :mod:`xvla.export`.

Nothing heavy is imported here: torch and onnx load only when the command runs.
"""

from __future__ import annotations

import argparse
import time


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_onnx, export_onnx, require_onnx
    from .policy import XVLAPolicy

    if args.format != "onnx":
        raise ValueError(f"--format {args.format} is not supported: use --format onnx")
    require_onnx()
    policy = XVLAPolicy.from_pretrained(args.checkpoint, dtype="float32")
    size = tuple(args.image_size) if args.image_size else None
    start = time.perf_counter()
    meta = export_onnx(policy.model, args.output, views=args.views, image_size=size, opset=args.opset)
    print(
        f"wrote {args.output}/encoder.onnx and denoise_step.onnx in {time.perf_counter() - start:.1f}s: "
        f"{meta['views']} views of {meta['image_size'][0]}x{meta['image_size'][1]}, text {meta['text_length']}, "
        f"chunk {meta['chunk_size']}x{meta['model_action_dim']}, dynamic batch"
    )
    if not args.no_check:
        result = check_onnx(policy.model, args.output)
        print(
            f"onnxruntime vs eager torch (fp32, batch {result['batch']}, {meta['num_denoising_steps']} steps): "
            f"max abs diff {result['max_abs_diff']:.1e}; {1000 * result['onnx_s']:.0f} ms vs "
            f"{1000 * result['eager_s']:.0f} ms per chunk"
        )
        if result["max_abs_diff"] > 1e-4:
            raise ValueError(
                f"the exported graphs differ from eager by {result['max_abs_diff']:.1e} (> 1e-4)"
            )
    if args.fast:
        _compare_with_fast_path(args)
    return 0


def _compare_with_fast_path(args: argparse.Namespace) -> None:
    """Time PyTorch's fastest setting on this machine on the check's inputs: export pays only if it is slower."""
    from .export import chunk_seconds
    from .hardware import choose
    from .policy import XVLAPolicy

    batch = 3
    setting = choose("cpu")
    fast = XVLAPolicy.from_pretrained(args.checkpoint, fast=True, device="cpu", compile_batch_sizes=(batch,))
    seconds = chunk_seconds(fast.model, args.output, batch=batch)
    print(f"PyTorch's fast path here ({setting.flags()}), batch {batch}: {1000 * seconds:.0f} ms per chunk")


def register(subparsers) -> None:
    """Add ``xvla export`` to the ``xvla`` command (called from xvla.cli)."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX (encoder + denoising step, dynamic batch)"
    )
    p.add_argument("checkpoint", help="checkpoint folder (any supported format) or Hub id")
    p.add_argument("output", help="output folder for encoder.onnx, denoise_step.onnx, export.json")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    p.add_argument("--views", type=int, help="camera views per sample (default: the checkpoint's)")
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="default: the size the checkpoint's frames reach the model at (image_size, else resize_imgs_with_padding, else 224 224)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version (default: 18)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-eager check")
    p.add_argument(
        "--fast",
        action="store_true",
        help="also time PyTorch's fastest setting on this machine (`xvla info --hardware`) on the same inputs",
    )
    p.set_defaults(func=cmd_export)
