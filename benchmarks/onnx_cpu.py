"""The exported graphs on CPU: onnxruntime and OpenVINO against eager PyTorch and the fast path, interleaved.

    python benchmarks/onnx_cpu.py --batches 1 8 --repeats 3

Exports the mid config (random weights) once, then times one chunk (encoder + 10 steps) per variant
and round, in turns, and reports medians:

- ``onnxruntime``: the fp32 graphs, ``OnnxSampler(out)``;
- ``openvino-f32`` / ``openvino-bf16``: the same graphs on OpenVINO, ``OnnxSampler(out, runtime="openvino",
  precision=...)`` (``pip install 'xvla[openvino]'``);
- ``torch-fp32``: eager PyTorch, the reference for the errors (max abs difference of the action chunk);
- ``torch-fast``: the fast path, bf16 weights + ``compile_for_inference`` (``compile=True``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build_mid():
    import torch
    from inference import CONFIGS

    from xvla.config import XVLAConfig, tiny_florence_config
    from xvla.model import XVLAModel

    overrides, size, views, length = CONFIGS["mid"]
    overrides = dict(overrides)
    overrides["florence_config"] = tiny_florence_config(max_positions=512, **overrides.pop("florence"))
    torch.manual_seed(0)
    return XVLAModel(XVLAConfig(tokenizer_max_length=length, **overrides)).eval(), views, size


def torch_runner(model, inputs, noise):
    import torch

    def run():
        with torch.no_grad():
            return model.generate_actions(**inputs, noise=noise).float()

    return run


def onnx_runner(model, sampler, inputs, noise):
    """One chunk through an OnnxSampler, postprocessed like the torch variants' actions."""
    import torch

    feed = {k: v.numpy() for k, v in inputs.items()}
    return lambda: model.action_space.postprocess(torch.from_numpy(sampler(feed, noise.numpy())))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch

    from xvla.export import ENCODER_INPUTS, OnnxSampler, example_inputs, export_onnx
    from xvla.model.compiled_runner import compile_for_inference

    torch.set_num_threads(args.threads)
    model, views, size = build_mid()
    fast = copy.deepcopy(model)
    fast.config = fast.config.replace(dtype="bfloat16")
    compile_for_inference(fast.to(torch.bfloat16), batch_sizes=args.batches)
    print(
        "| batch | variant | ms / chunk | x torch-fp32 time | x torch-fast time | max abs err vs torch-fp32 |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, tmp, views=views, image_size=(size, size))
        samplers = {
            "onnxruntime": OnnxSampler(tmp, threads=args.threads),
            "openvino-f32": OnnxSampler(tmp, threads=args.threads, runtime="openvino", precision="f32"),
            "openvino-bf16": OnnxSampler(tmp, threads=args.threads, runtime="openvino", precision="bf16"),
        }
        for batch in args.batches:
            ex = example_inputs(model, batch, views, (size, size))
            inputs = {k: ex[k] for k in (*ENCODER_INPUTS, "proprio")}
            runs = {
                name: torch_runner(m, inputs, ex["noise"])
                for name, m in (("torch-fp32", model), ("torch-fast", fast))
            }
            runs.update({name: onnx_runner(model, s, inputs, ex["noise"]) for name, s in samplers.items()})
            times, outs = {k: [] for k in runs}, {}
            for _ in range(
                args.repeats + 1
            ):  # the first round warms up (compiles the fast path) and is dropped
                for name, run in runs.items():
                    start = time.perf_counter()
                    outs[name] = run()
                    times[name].append(1000 * (time.perf_counter() - start))
            med = {k: statistics.median(v[1:]) for k, v in times.items()}
            for name in runs:
                err = (outs[name] - outs["torch-fp32"]).abs().max().item()
                print(
                    f"| {batch} | {name} | {med[name]:.1f} | {med[name] / med['torch-fp32']:.2f} | "
                    f"{med[name] / med['torch-fast']:.2f} | {err:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
