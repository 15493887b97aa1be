"""ONNX on CPU: export the mid config, then time onnxruntime against eager PyTorch, interleaved.

    python benchmarks/onnx_cpu.py --batches 1 8 --repeats 3

Both run fp32 (the exported graphs are fp32); errors are max abs differences of the raw action chunk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch
    from inference import CONFIGS

    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.export import OnnxSampler, example_inputs, export_onnx
    from xvla.model import XVLAModel

    torch.set_num_threads(args.threads)
    overrides, size, views, length = CONFIGS["mid"]
    overrides = dict(overrides)
    overrides["florence_config"] = tiny_florence_config(max_positions=512, **overrides.pop("florence"))
    torch.manual_seed(0)
    model = XVLAModel(XVLAConfig(tokenizer_max_length=length, **overrides)).eval()
    print("| batch | onnxruntime ms / chunk | eager torch fp32 ms / chunk | ratio | max abs diff |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_onnx(model, tmp, views=views, image_size=(size, size))
        print(f"(export took {time.perf_counter() - start:.0f} s)", file=sys.stderr)
        sampler = OnnxSampler(tmp, threads=args.threads)
        for batch in args.batches:
            ex = example_inputs(model, batch, views, (size, size))
            feed = {k: v.numpy() for k, v in ex.items()}
            ort_ms, torch_ms = [], []
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                raw = sampler(feed, feed["noise"])
                ort_ms.append(1000 * (time.perf_counter() - t0))
                t0 = time.perf_counter()
                with torch.no_grad():
                    context = model.encode(ex["input_ids"], ex["image_input"], ex["image_mask"], ex["domain_id"])
                    x1, action = ex["noise"], torch.zeros_like(ex["noise"])
                    for i in range(10, 0, -1):
                        t = torch.full((batch,), i / 10)
                        action = model.denoise_step(context, x1 * t.view(-1, 1, 1) + action * (1 - t).view(-1, 1, 1),
                                                    ex["proprio"], t)  # fmt: skip
                torch_ms.append(1000 * (time.perf_counter() - t0))
            diff = (torch.from_numpy(raw) - action).abs().max().item()
            o, e = statistics.median(ort_ms[1:]), statistics.median(torch_ms[1:])
            print(f"| {batch} | {o:.1f} | {e:.1f} | {o / e:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
