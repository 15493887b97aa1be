"""Action-head pieces with a faster form inside ``torch.compile`` graphs; eager calls are plain torch.

Both forms compute the same function; only what inductor generates differs (measurements in
docs/benchmarks.md):

- **Dropout.** torch's dropout becomes inductor's Philox random numbers, several times the cost per
  element of an integer hash, and a large share of a compiled training step. Here the graph draws one
  random seed per call, and each element's keep/drop bit is a 32-bit integer hash of (seed, element
  index), fused into the kernel that applies it, and the mask
  autograd keeps is uint8 (:func:`hashed_keep_mask` says why). The masks have the same
  distribution (keep probability 1 - p to 2**-24, independent across elements and calls); only the
  random stream differs from torch's, as it already does between eager and compiled torch. Attention
  dropout needs the probabilities, so under compile with dropout on, attention runs as explicit
  matmul / softmax / dropout / matmul (what torch's CPU attention does anyway when ``dropout_p > 0``).
- **Attention, bf16 without AMX.** Two batched GEMMs and a softmax instead of SDPA
  (:func:`explicit_bf16_attention` says where and why).
- **GELU, tanh approximation.** 0.5 * (1 + tanh(z)) is sigmoid(2z), and inductor's vector sigmoid
  (an exp) is much cheaper than its tanh, forward and backward. The two forms differ by float rounding
  only (5e-7 against 4e-7 max error from a float64 reference, inputs up to |x| = 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import probe

_THRESHOLD_BITS = 24
_MAX_ELEMENTS = 2**31 - 1  # element indices are int32


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift-multiply, "lowbias32") on int32 tensors.

    int32 products wrap around in the generated vector code, which is the modular arithmetic the hash
    wants; right shifts of int32 are arithmetic, so each is masked to make it a logical shift.
    """
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * 0x7FEB352D
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * -0x7B935975  # 0x846CA68B as a signed int32
    return h ^ ((h >> 16) & 0xFFFF)


def hashed_keep_mask(
    shape: torch.Size, seed: torch.Tensor, p: float, device: torch.device | None = None
) -> torch.Tensor:
    """uint8 mask of ``shape``: 1 (keep) with probability 1 - p, from an int32 ``seed`` tensor.

    uint8 and arithmetic rather than a bool comparison, because autograd keeps this mask for the
    backward pass, and inductor's CPU code turns a vector comparison into a bool or uint8 tensor through
    a slow generic conversion, which dominated the attention softmax kernel's time.
    ``(t - threshold) >> 31`` is -1 below the threshold and 0 above it (arithmetic
    shift), so adding 1 gives the keep bit as an integer, written with plain vector stores.
    """
    numel = shape.numel()
    index = torch.arange(numel, dtype=torch.int32, device=device).view(shape)
    h = _mix32(_mix32(index ^ seed) + seed)
    below = (((h >> 8) & 0xFFFFFF) - round(p * (1 << _THRESHOLD_BITS))) >> 31
    return (below + 1).to(torch.uint8)


def _draw_seed(device: torch.device) -> torch.Tensor:
    """One int32 seed per dropout call, drawn from torch's generator.

    Drawn as the max of two numbers, because a reduction is a buffer that inductor computes once, while a
    lone ``randint`` scalar is inlined into the kernel that uses it and re-drawn in every vector
    iteration there. Every seed stays possible; only collisions
    between two calls get slightly likelier (4/3 of uniform draws' 1 in 2**31).
    """
    return torch.randint(0, 2**31 - 1, (2,), dtype=torch.int32, device=device).amax()


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with hashed masks when traced by ``torch.compile``."""
    if not training or p == 0.0:
        return x
    if not torch.compiler.is_compiling() or x.numel() > _MAX_ELEMENTS or p >= 1.0:
        return F.dropout(x, p, training=True)
    keep = hashed_keep_mask(x.shape, _draw_seed(x.device), p, x.device)
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` that uses :func:`dropout` (same constructor, no parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


_CPU_HAS_AMX = probe().amx


def explicit_bf16_attention(q: torch.Tensor) -> bool:
    """Whether a compiled graph computes attention on ``q`` [B, heads, L, d] as two batched GEMMs and a
    softmax instead of SDPA: bf16 on a CPU without AMX, with at least 16 (batch, head) pairs.

    torch's CPU flash attention runs bf16 on small per-block GEMMs; they are fast on AMX tiles but not
    without them, where oneDNN's batched bf16 GEMMs and one fused softmax kernel are faster once there
    are enough (batch, head) pairs. At few pairs the two are level, so SDPA stays there
    (docs/benchmarks.md, "Fast path"). A symbolic batch (the bf16 graph for every size from 2 up)
    counts as 2, which the graph knows without a guard: one graph still serves every size.
    """
    if _CPU_HAS_AMX or q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return False
    batch, heads = q.shape[0], q.shape[1]
    return heads * (1 if batch == 1 else 2) >= 16


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention [B, heads, L, d] with dropout ``dropout_p`` on the probabilities."""
    compiling = torch.compiler.is_compiling()
    if dropout_p == 0.0 and compiling and explicit_bf16_attention(q):
        # q is scaled before the GEMM (exact for d = 64): with the scale after it, inductor's pattern
        # matcher turns the graph back into SDPA. The GEMM rounds the scores to bf16 (SDPA keeps them
        # in fp32); at mid the actions' error against fp32 stayed at 1.97e-3 max, 1.34e-4 mean.
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
    if dropout_p == 0.0 or not compiling:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    probs = torch.softmax(scores, dim=-1)
    return dropout(probs, dropout_p, training=True).to(v.dtype) @ v


_GELU_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


class GeluTanh(nn.Module):
    """``nn.GELU(approximate="tanh")``, as x * sigmoid(2z) when traced by ``torch.compile``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return F.gelu(x, approximate="tanh")
        return x * torch.sigmoid(_GELU_SCALE * (x + 0.044715 * x * x * x))
