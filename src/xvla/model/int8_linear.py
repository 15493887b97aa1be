"""int8 linear layers for CPU inference (``XVLAPolicy.from_pretrained(..., quantize="int8")``).

Weights are int8 with one scale per output channel (symmetric); activations are quantized to uint8 at run
time with one scale and zero point per call (per tensor), the scheme of PyTorch's x86 inductor
quantization and onnxruntime's dynamic quantization. Both sides are plain ``torch`` ops: no extra
package.

Why this form: written as quantize -> dequantize -> ``F.linear``, the layer is exactly the pattern
inductor's freezing passes turn into oneDNN's prepacked int8 linear (``onednn.qlinear_pointwise``: AMX
int8 tiles where the CPU has them) with the bias, a following GELU and a following residual add fused
in its epilogue, and the activation's quantization fused into the kernel before it (the LayerNorm). So
``compile=True`` is where int8 pays; in eager mode the layer calls the same oneDNN kernel on a weight
packed once (:meth:`Int8Linear.forward`).

One scale per call means the samples of a batch share it: a sample's actions can move within int8's
rounding with the batch it came in (per-token scales would avoid that, at the cost of a rescaling pass
over every output; measured in docs/benchmarks.md).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import probe

# Registers torch.ops.quantized_decomposed (choose_qparams, quantize / dequantize per tensor / channel).
import torch.ao.quantization.fx._decomposed  # noqa: F401  isort: skip

_QD = torch.ops.quantized_decomposed
# Inductor's int8 lowering (torch 2.13) warns about its own copy of our weight zero points at every compile.
warnings.filterwarnings(
    "ignore", message="To copy construct from a tensor", module="torch._inductor.mkldnn_lowerings"
)
# Linears with fewer inputs stay in full precision: tiny GEMMs gain nothing and lose accuracy.
MIN_IN_FEATURES = 64


def weight_bits() -> int:
    """8 where the CPU has VNNI (or on a GPU); 7 where it does not.

    Without VNNI, oneDNN multiplies u8 activations by s8 weights with ``vpmaddubsw``, which sums each pair
    of products into a saturating int16: 2 x 255 x 127 = 64,770 overflows 32,767 and the result is silently
    wrong. With weights in [-63, 63] a pair is at most 2 x 255 x 63 = 32,130, exact. Halving the weights'
    step (per output channel) costs less accuracy than halving the activations' (one scale per call).
    """
    return 8 if probe().vnni else 7


def _onednn_int8_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.onednn.qlinear_pointwise.tensor)
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_INT8 = _onednn_int8_available()  # once: forward runs per layer per denoising step


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (per output channel) and uint8 activations (per call)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        self.weight_bits = weight_bits()
        levels = 2 ** (self.weight_bits - 1) - 1
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / levels
        # Parameters, not buffers: inductor's freezing treats parameters as constants and packs them.
        self.qweight = nn.Parameter(torch.round(weight / scale[:, None]).to(torch.int8), requires_grad=False)
        self.weight_scale = nn.Parameter(scale, requires_grad=False)
        self.weight_zero_point = nn.Parameter(torch.zeros_like(scale, dtype=torch.int64), requires_grad=False)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )
        self._packed: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"weight_bits={self.weight_bits}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.compiler.is_compiling() and _ONEDNN_INT8:
            return self._onednn_forward(x)
        return self._reference_forward(x)

    def _quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x.float()
        scale, zero_point = _QD.choose_qparams.tensor(x, 0, 255, torch.finfo(torch.float32).eps, torch.uint8)
        return _QD.quantize_per_tensor.tensor(x, scale, zero_point, 0, 255, torch.uint8), scale, zero_point

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pattern inductor compiles to oneDNN's int8 linear (keep its op order: the match depends on it)."""
        qx, scale, zero_point = self._quantize_input(x)
        x_dq = _QD.dequantize_per_tensor.tensor(qx, scale, zero_point, 0, 255, torch.uint8).to(x.dtype)
        w_dq = _QD.dequantize_per_channel(
            self.qweight, self.weight_scale, self.weight_zero_point, 0, -128, 127, torch.int8
        ).to(x.dtype)
        return F.linear(x_dq, w_dq, self.bias)

    def _onednn_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            self._packed = torch.ops.onednn.qlinear_prepack(self.qweight, None)
        qx, scale, zero_point = self._quantize_input(x.reshape(-1, self.in_features))
        out = torch.ops.onednn.qlinear_pointwise.tensor(
            qx,
            scale,
            zero_point,
            self._packed,
            self.weight_scale,
            self.weight_zero_point,
            self.bias,
            1.0,
            0,
            x.dtype,
            "none",
            [],
            "",
        )
        return out.reshape(*x.shape[:-1], self.out_features)


def quantize_int8(model: nn.Module) -> int:
    """Replace ``model``'s linear layers with :class:`Int8Linear`, in place; returns how many.

    Every ``nn.Linear`` with at least :data:`MIN_IN_FEATURES` inputs is quantized (the VLM's and the
    transformer's); the domain-indexed tables, the soft prompts and the action encoder / decoder are not
    ``nn.Linear`` and stay in full precision. Compile the model afterwards (``compile=True``) for the fused
    oneDNN int8 kernels.
    """
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.in_features >= MIN_IN_FEATURES
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Int8Linear(linear).to(linear.weight.device))
    return len(targets)
