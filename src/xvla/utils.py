"""Small helpers shared across the package: atomic file writes and dtype names."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype={name!r} is invalid: allowed values are {list(TORCH_DTYPES)}") from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_file(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file onto ``path`` with normal permissions (mkstemp makes 0600)."""
    os.chmod(tmp, 0o666 & ~_current_umask())
    os.replace(tmp, path)


def atomic_write(path: Path, write: Callable[[Path], None], suffix: str = ".tmp") -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    The temporary name is hidden and does not end in the real suffix, so globs such as
    ``data/*/*.parquet`` never pick up a half-written (or abandoned) file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        publish_file(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))
