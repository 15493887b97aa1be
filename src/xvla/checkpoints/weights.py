"""Checkpoint weights on disk: safetensors only (one file or shards), verified without reading the tensors,
written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..utils import atomic_write

if TYPE_CHECKING:
    import torch

WEIGHTS_NAME = "model.safetensors"


def weights_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors file(s): ``model.safetensors`` or its shards."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if path.exists():
        return [path]
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    if shards:
        return shards
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")) or any(folder.glob("*.pth")):
        raise FileNotFoundError(
            f"{folder} has only pickle weights (.bin/.pt); xvla reads safetensors only. Convert them with "
            "safetensors.torch.save_file in a trusted environment."
        )
    raise FileNotFoundError(f"{path} not found: the checkpoint folder must contain {WEIGHTS_NAME}")


def load_weights_file(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in weights_files(folder):
        out.update(_read_safetensors(path))
    return out


def verify_weights(folder: Path) -> dict[str, Any]:
    """Check each weights file's header and sizes without reading the tensors (what ``xvla info`` reports).

    safetensors validates on open that every tensor's byte range matches its dtype and shape and that the
    ranges cover the file exactly, so a truncated or padded download is caught here, not at load time."""
    from safetensors import safe_open

    files, tensors = [], 0
    for path in weights_files(folder):
        try:
            with safe_open(str(path), framework="np") as f:
                tensors += len(list(f.keys()))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged files
            raise ValueError(_damaged(path, exc)) from exc
        files.append({"name": path.name, "bytes": path.stat().st_size})
    return {"files": files, "tensors": tensors, "status": "ok (header and sizes verified)"}


def _damaged(path: Path, exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"{path} is damaged: truncated or corrupt ({reason}, {path.stat().st_size} bytes): download or copy "
        "the checkpoint again"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(_damaged(path, exc)) from exc


def save_weights_file(
    state_dict: dict[str, torch.Tensor], folder: Path, metadata: dict[str, str] | None = None
) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # safetensors refuses shared storage; each tensor gets its own copy.
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.data_ptr()
        if ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata or {})
        sort_header_metadata(tmp)

    atomic_write(Path(folder) / WEIGHTS_NAME, write)


def sort_header_metadata(path: Path) -> None:
    """Put a safetensors file's ``__metadata__`` entries in key order, in place.

    safetensors keeps the metadata in a hash map, so their order, and with it the file's bytes, changes
    from run to run; sorted, saving the same weights twice gives the same file. The header holds the same
    entries reordered, so it keeps its length and the tensors do not move.
    """
    with open(path, "r+b") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
        metadata = header.pop("__metadata__", None)
        if not metadata:
            return
        ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        # safetensors writes compact JSON as json.dumps does, so only an unknown header form can be longer.
        if len(text) > length:
            raise RuntimeError(
                f"{path}: the sorted safetensors header ({len(text)} bytes) is longer than the one safetensors "
                f"wrote ({length} bytes): this safetensors version writes its header in a form xvla does not know"
            )
        f.seek(8)
        f.write(text.ljust(length, b" "))
