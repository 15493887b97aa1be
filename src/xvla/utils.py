"""Small helpers shared across the package: atomic file and folder writes, JSON, dtype names."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class UserFacingError(RuntimeError):
    """A failure outside the user's input (a simulator worker died, a run was interrupted...) whose message
    already says what happened and what to do; the CLI prints it in one line."""


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(preference: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The one device rule: None/"auto" -> this rank's GPU when CUDA is available, else the CPU;
    "cuda" -> this rank's GPU; "cuda:N", "cpu" as given. Asking for CUDA where there is none is an error."""
    if preference in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference if str(preference) != "cuda" else f"cuda:{local_rank}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(preference)!r} was requested but CUDA is not available here; use --device cpu")
    return device


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


def write_json(path: str | Path, data: Any, indent: int = 2) -> None:
    """The one JSON writer: indented, UTF-8, written atomically (readers never see half a file).

    numpy values become Python numbers and lists; anything else unknown (paths...) becomes a string.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=_jsonable)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    return str(obj)


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False, flag: str = "--overwrite") -> Iterator[Path]:
    """Build a folder under a hidden temporary name and rename it onto ``path`` only when complete.

    A crash or an error leaves ``path`` as it was (no half-written folder). An existing ``path`` is
    refused unless ``overwrite`` is set (name the CLI flag that sets it in ``flag``).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists: choose another destination, or pass {flag} to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
