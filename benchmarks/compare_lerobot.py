"""Speed next to the reference: LeRobot 0.4.4's `xvla` vs this library, same weights, same inputs.

The reference lives in its own venv (see SPEC §6 / tests/fixtures/parity/README.md); this script
runs its half there and its other half here, on one checkpoint that LeRobot writes:

    python benchmarks/compare_lerobot.py --reference-python /path/to/refenv/bin/python

It prints ms per action chunk for both and checks that the chunks agree (same noise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {
    # name: (head overrides, florence width, image size, views, text length, batch sizes)
    "mid": (dict(hidden_size=512, depth=8, num_heads=8), 128, 224, 2, 64),
    "small": (dict(hidden_size=256, depth=4, num_heads=4), 64, 128, 2, 32),  # 4x4 (+1) tokens per view
}


def florence_remote(width: int, length: int) -> dict:
    return {
        "model_type": "florence2", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "vocab_size": 1024,
        "projection_dim": width,
        "vision_config": {
            # Four stages downsample 32x, as Florence-2-large does (224x224 -> 7x7 tokens + 1 pooled).
            "model_type": "davit", "drop_path_rate": 0.0, "patch_size": [7, 3, 3, 3], "patch_stride": [4, 2, 2, 2],
            "patch_padding": [3, 1, 1, 1], "patch_prenorm": [False, True, True, True],
            "dim_embed": [16, 32, 64, width], "num_heads": [2, 4, 8, 8], "num_groups": [2, 4, 8, 8],
            "depths": [1, 1, 1, 1], "window_size": 4, "projection_dim": width,
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 16},
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 32},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "text_config": {
            "model_type": "florence2_language", "vocab_size": 1024, "d_model": width, "encoder_layers": 1,
            "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
            "encoder_ffn_dim": 2 * width, "decoder_ffn_dim": 2 * width, "max_position_embeddings": 512,
        },
    }  # fmt: skip


def make_inputs(size: str, batch: int, proprio_dim: int):
    import torch

    _, _, image, views, length = SIZES[size]
    g = torch.Generator().manual_seed(0)
    return dict(
        input_ids=torch.randint(3, 1000, (batch, length), generator=g),
        image_input=torch.randn(batch, views, 3, image, image, generator=g),
        image_mask=torch.ones(batch, views, dtype=torch.bool),
        domain_id=torch.arange(batch) % 30,
        proprio=torch.randn(batch, proprio_dim, generator=g),
    ), torch.randn(batch, 32, 20, generator=g)


def time_it(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def reference_half(args) -> None:
    """Runs in the reference venv: build + save a LeRobot policy, time its generate_actions."""
    sys.path.insert(0, str(HERE.parent / "scripts"))
    from make_parity_fixtures import install_torchvision_stub

    install_torchvision_stub()
    import torch
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.xvla.configuration_xvla import XVLAConfig
    from lerobot.policies.xvla.modeling_xvla import XVLAPolicy

    torch.set_num_threads(args.threads)
    head, width, image, views, length = SIZES[args.size]
    torch.manual_seed(0)
    features = {f"observation.images.cam{i}": PolicyFeature(FeatureType.VISUAL, (3, image, image)) for i in range(views)}
    features["observation.state"] = PolicyFeature(FeatureType.STATE, (32,))
    config = XVLAConfig(
        florence_config=florence_remote(width, length), tokenizer_max_length=length, device="cpu",
        input_features=features, output_features={"action": PolicyFeature(FeatureType.ACTION, (20,))}, **head,
    )  # fmt: skip
    policy = XVLAPolicy(config)
    with torch.no_grad():
        for p in policy.parameters():  # image_projection is left uninitialised by the reference
            p.copy_(torch.randn_like(p) * 0.02)
    policy.save_pretrained(args.checkpoint)
    model = policy.model.eval()
    out = {}
    for batch in args.batches:
        inputs, noise = make_inputs(args.size, batch, 32)
        real_randn = torch.randn

        def run(inputs=inputs, noise=noise, real_randn=real_randn):
            torch.randn = lambda *a, **k: noise.clone()
            try:
                with torch.no_grad():
                    return model.generate_actions(**inputs, steps=10)
            finally:
                torch.randn = real_randn

        out[batch] = {"ms": time_it(run, args.repeats), "actions": run().tolist()}
    print("RESULT " + json.dumps(out))


def ours_half(args) -> dict:
    import torch

    from xvla import XVLAPolicy

    torch.set_num_threads(args.threads)
    model = XVLAPolicy.from_pretrained(args.checkpoint).model
    out = {}
    for batch in args.batches:
        inputs, noise = make_inputs(args.size, batch, 32)
        def run(inputs=inputs, noise=noise):
            return model.generate_actions(**inputs, steps=10, noise=noise)

        out[batch] = {"ms": time_it(run, args.repeats), "actions": run()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", help="python of the venv where lerobot==0.4.4 is installed")
    parser.add_argument("--size", default="mid", choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--reference-half", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_half:
        reference_half(args)
        return
    if not args.reference_python:
        parser.error("--reference-python is required (the reference must not be installed beside xvla)")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        args.checkpoint = str(Path(tmp) / "ckpt")
        cmd = [args.reference_python, __file__, "--reference-half", "--checkpoint", args.checkpoint, "--size", args.size,
               "--repeats", str(args.repeats), "--threads", str(args.threads), "--batches", *map(str, args.batches)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"reference half failed:\n{proc.stderr[-3000:]}")
        ref = {int(k): v for k, v in json.loads(lines[-1][7:]).items()}
        ours = ours_half(args)
    print(f"\nX-VLA '{args.size}' config, 10 denoising steps, CPU, {os.cpu_count()} cores, torch threads={args.threads}, "
          f"median of {args.repeats}\n")  # fmt: skip
    print("| batch | LeRobot 0.4.4 ms/chunk | xvla ms/chunk | speed-up | max abs diff of actions |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        diff = (torch.tensor(ref[batch]["actions"]) - ours[batch]["actions"]).abs().max().item()
        print(f"| {batch} | {ref[batch]['ms']:.1f} | {ours[batch]['ms']:.1f} | {ref[batch]['ms'] / ours[batch]['ms']:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
