"""Weights on disk: saving the same weights twice gives the same bytes (safetensors' metadata order would not)."""

from __future__ import annotations

import torch
from safetensors import safe_open

from xvla.checkpoints.weights import WEIGHTS_NAME, load_weights_file, save_weights_file

# Enough keys that an unsorted hash-map order would almost surely differ between saves (6! orders).
METADATA = {name: f"value of {name}" for name in ("producer", "format", "zeta", "alpha", "mu", "omega")}


def test_saving_the_same_weights_twice_gives_identical_bytes(tmp_path):
    weights = {
        "b.weight": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        "a.bias": torch.arange(5.0),
    }
    files = []
    for i in range(4):
        save_weights_file(weights, tmp_path / str(i), metadata=METADATA)
        files.append((tmp_path / str(i) / WEIGHTS_NAME).read_bytes())
    assert all(f == files[0] for f in files[1:])
    header = files[0][8 : 8 + int.from_bytes(files[0][:8], "little")].decode()
    assert header.index('"alpha"') < header.index('"format"') < header.index('"zeta"')  # sorted by key


def test_sorted_metadata_file_reads_back(tmp_path):
    weights = {"w": torch.randn(2, 3, dtype=torch.bfloat16), "n": torch.tensor([1, 2, 3])}
    save_weights_file(weights, tmp_path, metadata=METADATA)
    loaded = load_weights_file(tmp_path)
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    with safe_open(str(tmp_path / WEIGHTS_NAME), framework="pt") as f:
        assert f.metadata() == METADATA
