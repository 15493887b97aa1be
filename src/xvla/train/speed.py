"""Training speed-ups: compiled forward/backward graphs and a fused optimizer step.

    from xvla.train.speed import compile_for_training
    compile_for_training(policy.model)          # before wrapping in DDP; needs a C++ compiler on CPU

The trainer calls :func:`compile_for_training` when its config asks for ``compile`` and builds AdamW with
``fused=True`` where the device supports it (:func:`fused_adamw_supported`). ``xvla train`` has already
set glibc's allocator to keep freed memory between steps (:func:`xvla.utils.keep_freed_memory`); a program
that calls the trainer as a library opts in by calling it.

What is compiled, and why not the whole loss: the vision tower, the BART encoder and the action head's
``denoise`` are fixed-shape for a fixed batch size, so inductor fuses LayerNorm, GELU, dropout and the
residual adds of both the forward and the backward pass into a few kernels each (the action head's
dropout and GELU take cheaper compiled forms there: :mod:`xvla.model.compiled_ops`). The glue between them
(camera-mask indexing, input checks, the loss terms) has data-dependent shapes or Python branches that
would only split the graph, and costs little.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..model.compiled_runner import check_compile_supported

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
