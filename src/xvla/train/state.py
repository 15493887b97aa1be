"""Training checkpoints: written atomically, the last K kept, everything needed to resume exactly.

Layout under ``output_dir``::

    train_config.json                    the resolved training configuration
    checkpoints/000500/pretrained_model/ config.json + model.safetensors (+ tokenizer):
                                         loads with XVLAPolicy.from_pretrained
    checkpoints/000500/training_state/   optimizer.safetensors + optimizer.json, scheduler.json,
                                         sampler.json, trainer_state.json, rng_state_rank<r>.{safetensors,json}
                                         (+ trainable.safetensors for LoRA runs)
    checkpoints/last -> 000500           the newest complete checkpoint
    final -> checkpoints/<last step>/pretrained_model

A checkpoint is assembled in ``checkpoints/.tmp-<step>`` and renamed into place, so a crash leaves
either the previous checkpoint or the new one, never half of one. No file is a pickle.
:mod:`xvla.train.checkpointer` decides what a run writes into these files and reads back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import checkpoints as ckpt
from ..config import XVLAConfig
from ..utils import atomic_directory, atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
PRETRAINED = "pretrained_model"
TRAINING_STATE = "training_state"
LAST = "last"
FINAL = "final"


# ---------------------------------------------------------------------------------------------- json
def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(flat, str(tmp)))


# ---------------------------------------------------------------------------------------------- model export
def export_pretrained(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    config: XVLAConfig,
    tokenizer: Any = None,
    source_dir: Path | None = None,
) -> Path:
    """Write a checkpoint folder in our format (the same files as ``XVLAPolicy.save_pretrained``)."""
    return ckpt.write_checkpoint(directory, state_dict, config, "xvla", tokenizer, source_dir, "xvla train")


# ---------------------------------------------------------------------------------------------- optimizer
def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as (tensors for safetensors, JSON-able structure)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    key_types = {}
    for pid, entry in state["state"].items():
        key_types[str(pid)] = "int" if isinstance(pid, int) else "str"
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}::{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars, "key_types": key_types}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    key_types = meta.get("key_types", {})

    def pid_of(text: str):
        return int(text) if key_types.get(text, "int") == "int" else text

    state: dict[Any, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, _, name = key.rpartition("::")
        state.setdefault(pid_of(pid), {})[name] = value
    for pid, entry in meta.get("scalars", {}).items():
        state.setdefault(pid_of(pid), {}).update(entry)
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group and isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.uint32).astype(np.int64))
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- layout
def checkpoints_dir(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def step_dir(output_dir: Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"{step:06d}"


def tmp_dir(output_dir: Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f".tmp-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name.isdigit():
            if (child / TRAINING_STATE / "trainer_state.json").is_file():
                out.append((int(child.name), child))
    return sorted(out)


def latest_checkpoint(output_dir: Path) -> Path | None:
    last = checkpoints_dir(output_dir) / LAST
    if last.is_symlink() or last.is_dir():
        target = last.resolve()
        if (target / TRAINING_STATE / "trainer_state.json").is_file():
            return target
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def _symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError:  # filesystems without symlinks: write the target's name instead
        atomic_write_text(link.with_name(link.name + ".txt"), target)


def publish_final(model_dir: Path, final: Path) -> None:
    """``final`` as a real folder (hard links to the checkpoint's files, copies where links fail), so that
    ``cp -r OUTPUT/final`` copies a model and not a relative link that dangles elsewhere."""
    with atomic_directory(final, overwrite=True) as tmp:
        for src in model_dir.iterdir():
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copy2(src, tmp / src.name)


def publish(output_dir: Path, step: int, keep_last: int, final: bool = False) -> Path:
    """Rename the assembled temp folder into place, point ``last`` at it, drop old checkpoints."""
    tmp, dest = tmp_dir(output_dir, step), step_dir(output_dir, step)
    trash = None
    if dest.exists():
        trash = dest.with_name(f".old-{dest.name}")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(dest, trash)
    os.replace(tmp, dest)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    _symlink(checkpoints_dir(output_dir) / LAST, dest.name)
    if final:
        publish_final(dest / PRETRAINED, Path(output_dir) / FINAL)
    if keep_last > 0:
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            if old != dest:
                shutil.rmtree(old, ignore_errors=True)
    return dest


def clean_stale_tmp(output_dir: Path) -> None:
    root = checkpoints_dir(output_dir)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".old-")) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
