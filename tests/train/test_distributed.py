"""Two CPU processes under torchrun (gloo): DDP keeps the ranks' parameters identical, the ranks see
disjoint samples, and FSDP2 ends with the same weights as DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from xvla.train.mixture import MixtureBatchSampler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path, dataset, checkpoint, name, *extra):
    config = tmp_path / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "recipe": "official",
                "dataset": {"root": str(dataset)},
                "policy": {"path": str(checkpoint)},
                "steps": 4,
                "batch_size": 3,
                "num_workers": 0,
                "log_freq": 1,
                "save_freq": 4,
                "seed": 5,
                "scheduler": {"freeze_steps": 2, "warmup_steps": 1},
                "diagnostics": True,
                "tensorboard": False,
                "plot": False,
                "device": "cpu",
            }
        )
    )
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "xvla.cli",
        "train",
        "--config",
        str(config),
        "--output_dir",
        str(out),
        *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"diagnostics_rank{r}.json").read_text()) for r in (0, 1)]
    return out, ranks


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, dataset_a, tiny_checkpoint):
    return _torchrun(tmp_path_factory.mktemp("ddp"), dataset_a, tiny_checkpoint, "ddp")


def test_ddp_ranks_stay_identical_and_see_disjoint_samples(ddp_run, dataset_a):
    out, (r0, r1) = ddp_run
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["checksum"] == r1["checksum"]  # parameters identical on both ranks after 4 steps
    s0, s1 = {tuple(s) for s in r0["samples"]}, {tuple(s) for s in r1["samples"]}
    assert len(s0) == len(r0["samples"]) == 12 and len(s1) == 12
    assert not s0 & s1
    # Together the ranks consumed exactly what one process with the global batch would have.
    single = iter(MixtureBatchSampler([31], [1.0], batch_size=6, seed=5))
    expected = {(d, i) for _ in range(4) for d, i, _ in next(single)}
    assert s0 | s1 == expected
    assert (out / "final" / "model.safetensors").is_file()


def test_fsdp_matches_ddp(tmp_path, ddp_run, dataset_a, tiny_checkpoint):
    """Same samples, same weights up to the order gradients are summed in.

    DDP all-reduces whole buckets; FSDP reduce-scatters shards, and ATen's kernels sum in an order that
    depends on the vector width (AVX2 vs AVX-512), so the gradients differ in their last bits, not bit for
    bit. AdamW's step is m / sqrt(v): a relative change of ~1e-6 in a gradient moves its step by about as
    much, so after 4 steps the weights agree to a small fraction of how far training moved them. A wrong
    shard, a missed reduction or a skipped step moves them by the whole step (lr x steps)."""
    ddp_out, (ddp0, _) = ddp_run
    out, (f0, _) = _torchrun(tmp_path, dataset_a, tiny_checkpoint, "fsdp", "--fsdp")
    assert {tuple(s) for s in f0["samples"]} == {tuple(s) for s in ddp0["samples"]}
    start = load_file(str(tiny_checkpoint / "model.safetensors"))
    ddp = load_file(str(ddp_out / "final" / "model.safetensors"))
    fsdp = load_file(str(out / "final" / "model.safetensors"))
    assert ddp.keys() == fsdp.keys()
    moved = max((ddp[k].float() - start[k].float()).abs().max().item() for k in ddp if k in start)
    gap = max((ddp[k].float() - fsdp[k].float()).abs().max().item() for k in ddp)
    assert moved > 0
    assert gap <= 1e-3 * moved, (
        f"FSDP and DDP weights differ by {gap:.3g}; training moved them by up to {moved:.3g}"
    )
