"""Training speed-ups: compiled forward/backward graphs, a fused optimizer step, and (CPU) an allocator
that keeps freed memory for the next step.

    from xvla.train.speed import compile_for_training
    compile_for_training(policy.model)          # before wrapping in DDP; needs a C++ compiler on CPU

The trainer calls :func:`compile_for_training` when its config asks for ``compile`` and builds AdamW with
``fused=True`` where the device supports it (:func:`fused_adamw_supported`); on CPU it first calls
:func:`keep_freed_memory`.

What is compiled, and why not the whole loss: the vision tower, the BART encoder and the action head's
``denoise`` are fixed-shape for a fixed batch size, so inductor fuses LayerNorm, GELU, dropout and the
residual adds of both the forward and the backward pass into a few kernels each (the action head's
dropout and GELU take cheaper compiled forms there: :mod:`xvla.model.compiled_ops`). The glue between them
(camera-mask indexing, input checks, the loss terms) has data-dependent shapes or Python branches that
would only split the graph, and costs little.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import TYPE_CHECKING

import torch

from ..fast import check_compile_supported

if TYPE_CHECKING:
    from ..model.xvla import XVLAModel


def compile_for_training(model: XVLAModel, mode: str | None = None) -> XVLAModel:
    """Compile the three heavy parts of ``model`` in place (for training: weights are not frozen)."""
    check_compile_supported(model.device)
    kwargs = {"dynamic": False, **({"mode": mode} if mode else {})}
    model.vlm.vision_tower.compile(**kwargs)
    model.vlm.language_model.encoder.compile(**kwargs)
    # An instance attribute shadows the method, so XVLAModel.denoise_step calls the compiled one.
    model.transformer.denoise = torch.compile(model.transformer.denoise, **kwargs)
    return model


def fused_adamw_supported(device: torch.device) -> bool:
    """Fused AdamW runs one kernel per step instead of a loop over parameters (CPU since torch 2.4, CUDA)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probe = torch.nn.Parameter(torch.zeros(1))
    try:
        torch.optim.AdamW([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit builds
_TRIM_THRESHOLD = 1 << 30
_TOP_PAD = 64 << 20  # grow the heap in large steps: fewer brk calls


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse (CPU training); True if it took effect.

    By default glibc serves blocks above a moving threshold (128 KB to 32 MB) with fresh ``mmap`` pages
    and gives freed memory back to the OS, so every training step pays a page fault and a zeroed page for
    each 4 KB of the activations it allocates again: 25k-90k faults per step at ``mid``, batch 8, and
    5-10% of a compiled bf16 step's time (A/B runs). With the mmap threshold at its ceiling and the trim
    threshold at 1 GB, the next step reuses the same memory (no faults); peak memory stays what the
    largest step needs. It changes only this process's allocator and no results. A no-op off glibc (and
    where another allocator such as jemalloc or tcmalloc is preloaded, glibc's settings are unused).
    """
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
