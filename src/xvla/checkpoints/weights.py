"""Checkpoint weights on disk: safetensors only (one file or shards), verified without reading the tensors,
written atomically."""

from __future__ import annotations

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
    return (f"{path} is damaged: truncated or corrupt ({reason}, {path.stat().st_size} bytes): download or copy "
            "the checkpoint again")  # fmt: skip


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for damaged files
        raise ValueError(_damaged(path, exc)) from exc


def save_weights_file(state_dict: dict[str, torch.Tensor], folder: Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # safetensors refuses shared storage; each tensor gets its own copy.
    seen: set[int] = set()
    for key, value in tensors.items():
        ptr = value.data_ptr()
        if ptr in seen:
            tensors[key] = value.clone()
        seen.add(ptr)
    from safetensors.torch import save_file

    atomic_write(Path(folder) / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))
