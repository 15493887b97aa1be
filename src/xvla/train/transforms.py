"""Sample transforms for training: action-chunk resampling over a time horizon and colour jitter.

Both are plain tensor functions (no torchvision) and take an explicit ``torch.Generator`` so a
sample's augmentation depends only on the seed and the sample's draw number, not on which loader
worker produced it.
"""

from __future__ import annotations

import math

import torch

_GRAY = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------------------------- actions
def frames_for_horizon(horizon_s: float, fps: float, num_points: int) -> int:
    """How many consecutive frames ``resample_chunk`` reads: times 0 .. (N-1)/N * horizon."""
    if horizon_s <= 0:
        raise ValueError(f"action_horizon_s={horizon_s} is invalid: it must be > 0 seconds")
    last = horizon_s * fps * (num_points - 1) / num_points
    return int(math.ceil(last - 1e-9)) + 1


def resample_chunk(
    actions: torch.Tensor, is_pad: torch.Tensor | None, fps: float, horizon_s: float, num_points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample an action chunk to ``num_points`` at times ``k * horizon_s / num_points`` (linear).

    ``actions`` [F, D] holds the frames at times 0, 1/fps, 2/fps, ...; ``is_pad`` [F] marks frames
    past the episode end. With ``horizon_s = num_points / fps`` this is the identity on the first
    ``num_points`` frames. A resampled point is padding when it lies past the last real frame.
    """
    frames = actions.shape[0]
    times = torch.arange(num_points, dtype=torch.float64) * (horizon_s / num_points)
    pos = (times * fps).clamp(max=frames - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=frames - 1)
    w = (pos - lo.to(torch.float64)).to(actions.dtype).unsqueeze(-1)
    out = actions[lo] * (1 - w) + actions[hi] * w
    if is_pad is None:
        pad = torch.zeros(num_points, dtype=torch.bool)
    else:
        real = int((~is_pad.bool()).sum())
        pad = times * fps > (real - 1) + 1e-9
    return out, pad


# ---------------------------------------------------------------------------------------------- colour
def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64))


def _gray(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img[0], img[1], img[2]
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(0)


def adjust_brightness(img: torch.Tensor, factor: float) -> torch.Tensor:
    return (img * factor).clamp(0.0, 1.0)


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    mean = _gray(img).mean()
    return (mean + (img - mean) * factor).clamp(0.0, 1.0)


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    gray = _gray(img)
    return (gray + (img - gray) * factor).clamp(0.0, 1.0)


def adjust_hue(img: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) through HSV."""
    r, g, b = img[0], img[1], img[2]
    maxc, _ = img.max(dim=0)
    minc, _ = img.min(dim=0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)
    )
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    hue = (hue + shift) % 1.0
    # HSV -> RGB
    h6 = hue * 6.0
    i = h6.floor()
    f = h6 - i
    v = maxc
    p = v * (1 - sat)
    q = v * (1 - sat * f)
    t = v * (1 - sat * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(img)
    for k, (rr, gg, bb) in enumerate(choices):
        m = i == k
        out[0] = torch.where(m, rr, out[0])
        out[1] = torch.where(m, gg, out[1])
        out[2] = torch.where(m, bb, out[2])
    return out.clamp(0.0, 1.0)


def color_jitter(
    img: torch.Tensor,
    gen: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.0,
) -> torch.Tensor:
    """Colour jitter of a [3, H, W] image in [0, 1]: factors drawn uniformly from [1 - x, 1 + x]
    (hue: a shift in [-hue, hue] turns), the four adjustments applied in a random order."""
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"color_jitter expects a [3, H, W] image, got {tuple(img.shape)}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"color_jitter hue={hue} is invalid: it must be in [0, 0.5]")
    ops = []
    if brightness > 0:
        ops.append((adjust_brightness, _uniform(gen, max(0.0, 1 - brightness), 1 + brightness)))
    else:
        _uniform(gen, 0, 1)  # keep the number of draws fixed, whatever is enabled
    if contrast > 0:
        ops.append((adjust_contrast, _uniform(gen, max(0.0, 1 - contrast), 1 + contrast)))
    else:
        _uniform(gen, 0, 1)
    if saturation > 0:
        ops.append((adjust_saturation, _uniform(gen, max(0.0, 1 - saturation), 1 + saturation)))
    else:
        _uniform(gen, 0, 1)
    if hue > 0:
        ops.append((adjust_hue, _uniform(gen, -hue, hue)))
    else:
        _uniform(gen, 0, 1)
    order = torch.randperm(4, generator=gen).tolist()
    ranked = sorted(range(len(ops)), key=lambda i: order[i])
    out = img
    for i in ranked:
        fn, value = ops[i]
        out = fn(out, value)
    return out
