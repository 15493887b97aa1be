"""The action head's linear layer: at inference on CPU it runs oneDNN's linear, with the bias fused.

``nn.Linear`` on CPU is ``addmm``: the bias is first copied into every output row, then MKL's GEMM
adds the product to it, and the MLP's GELU is one more pass over its widest activation. oneDNN's
linear (``torch.ops.mkldnn._linear_pointwise``, the op inductor's frozen graphs call) adds the bias in
the GEMM's epilogue and can apply the GELU there too, saving a copy and a pass over the widest
activation; eager chunks get faster in float32 and bfloat16 (docs/benchmarks.md). The actions move
only by float rounding: the same math, summed in another order.

The oneDNN call is taken only where it gives ``nn.Linear``'s result and is faster
(:func:`runs_on_onednn`): CPU, float32 or bfloat16 weights and inputs, GEMMs of at least
:data:`MIN_MULTIPLY_ADDS`, no autograd (training keeps ``addmm`` and its backward), and not while
``torch.compile``, ``torch.export`` or the JIT trace the model (inductor packs the weights itself;
exports want plain ``aten`` ops). Checkpoint keys and ``isinstance(m, nn.Linear)`` are
unchanged, so LoRA, int8 quantization and weight loading see an ordinary ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn


def _onednn_linear_op():
    """oneDNN's pointwise-fused linear, or None where this torch build has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_LINEAR_POINTWISE = _onednn_linear_op()
# Below about a million multiply-adds oneDNN's call costs more than it saves: with passive OpenMP
# threads its fixed cost (waking the threads) dominates, where addmm runs a tiny GEMM on one thread.
# A little above the threshold oneDNN is already the faster one.
MIN_MULTIPLY_ADDS = 1 << 20
_BF16_OK = _LINEAR_POINTWISE is not None and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _dtype_ok(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or (dtype == torch.bfloat16 and _BF16_OK)


def runs_on_onednn(layer: nn.Linear, x: torch.Tensor) -> bool:
    """Whether ``layer(x)`` takes oneDNN's linear (same result as ``nn.Linear``, see the module doc)."""
    weight = layer.weight
    return (
        _LINEAR_POINTWISE is not None
        # Plain tensors only: tensor-subclass weights (torchao's quantized ones, say) have their own kernels.
        and type(weight) in (torch.Tensor, nn.Parameter)
        and type(x) is torch.Tensor
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dtype == weight.dtype
        and _dtype_ok(x.dtype)
        and x.dim() >= 2
        and (x.numel() // max(x.shape[-1], 1)) * weight.numel() >= MIN_MULTIPLY_ADDS
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
    )


def onednn_linear(layer: nn.Linear, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """``layer(x)`` on oneDNN, followed by ``activation`` ("none" or "gelu_tanh") in the same kernel."""
    if activation == "gelu_tanh":
        return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "gelu", [], "tanh")
    if activation != "none":
        raise ValueError(f"activation must be 'none' or 'gelu_tanh', not {activation!r}")
    return _LINEAR_POINTWISE(x, layer.weight, layer.bias, "none", [], "")


class Linear(nn.Linear):
    """``nn.Linear`` that runs on oneDNN at CPU inference (:func:`runs_on_onednn`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if runs_on_onednn(self, x):
            return onednn_linear(self, x)
        return super().forward(x)

    def fuses_activation(self, x: torch.Tensor) -> bool:
        """Whether a caller may fuse an activation into this layer on ``x``.

        Fusing calls :func:`onednn_linear` instead of the module, so only where nothing hooks the module
        (a forward hook would otherwise not see the call).
        """
        return not (self._forward_hooks or self._forward_pre_hooks) and runs_on_onednn(self, x)
