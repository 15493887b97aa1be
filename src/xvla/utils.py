"""Small helpers shared across the package: atomic file and folder writes, JSON, dtype names, the allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: `xvla --help` and the light commands start without it.


class UserFacingError(RuntimeError):
    """A failure outside the user's input (a simulator worker died, a run was interrupted...) whose message
    already says what happened and what to do; the CLI prints it in one line."""


class Interrupted(UserFacingError):
    """Stopped by Ctrl-C or SIGTERM; the message says what was kept and how to go on. The CLI exits 130."""


DTYPE_NAMES = ("float32", "bfloat16")


class _DropImportNoise(logging.Filter):
    """Drops two harmless warnings that ``import transformers`` sets off when torchao is installed.

    transformers imports torchao when it is present (xvla does not need it; users may have it). On a CPU build of torch,
    torchao cannot load its CUDA-only extensions and says so ("Failed to load ..._C_mxfp8..."), and it
    registers two Enums the way torch 2.13 deprecates. Every ``xvla`` command would start with these four
    lines; none of them concerns an X-VLA user. Other messages of these loggers pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "torchao":
            import torch  # loaded already: torchao is imported by transformers, after torch

            cuda_only = message.startswith("Failed to load") and "/torchao/_C" in message
            return not (cuda_only and torch.version.cuda is None)
        return "is an Enum subclass and is now natively supported" not in message


def quiet_import_noise() -> None:
    """Install :class:`_DropImportNoise` on the two loggers (idempotent); the package does it on import."""
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropImportNoise) for f in logger.filters):
            logger.addFilter(_DropImportNoise())


def resolve_device(preference: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The one device rule: None/"auto" -> this rank's GPU when CUDA is available, else the CPU;
    "cuda" -> this rank's GPU; "cuda:N", "cpu" as given. Asking for CUDA where there is none is an error."""
    import torch

    if preference in (None, "", "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference if str(preference) != "cuda" else f"cuda:{local_rank}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(preference)!r} was requested but CUDA is not available here; use --device cpu"
        )
    return device


def torch_dtype(name: str) -> torch.dtype:
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype={name!r} is invalid: allowed values are {list(DTYPE_NAMES)}")
    return getattr(torch, name)


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
        raise FileExistsError(
            f"{path} already exists: choose another destination, or pass {flag} to replace it"
        )
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit builds
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20  # grow the heap in large steps: fewer brk calls


@functools.cache  # once per process: the setting is process-wide
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse; True if it took effect.

    The ``xvla`` command calls it at start; a program using the library opts in by calling it once.

    By default glibc serves blocks above a moving threshold (128 KB to 32 MB) with fresh ``mmap`` pages
    and gives freed memory back to the OS, so each training step or action chunk pays a page fault and a
    zeroed page for every 4 KB of activations it allocates again. Measured at ``mid``, batch 8: 25k-90k
    faults per training step (5-10% of a compiled bf16 step's time) and 130k-250k per eager fp32 chunk
    (5%). With the mmap threshold at its ceiling and the trim threshold at 1 GB, the next step reuses the
    same memory; peak memory stays what the largest step needs. It changes this process's allocator and
    no result. A no-op off glibc, under a preloaded jemalloc / tcmalloc (glibc's settings go unused), and
    with ``XVLA_KEEP_FREED_MEMORY=0`` in the environment.
    """
    if os.environ.get("XVLA_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
        (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
        (_M_TOP_PAD, _TOP_PAD),
    )
    return all([mallopt(param, value) == 1 for param, value in settings])
