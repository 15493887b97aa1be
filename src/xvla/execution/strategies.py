"""How a newly arrived chunk is merged with the plan the robot is executing (pure numpy, no state).

All functions see the plan from the robot's current position on: ``old`` is what is left of the
current plan ([n_old, A], possibly empty), ``new`` the part of the new chunk that is not yet in the
past ([n_new, A]). They return the plan to follow from now on.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("sync", "replace", "blend", "ensemble", "rtc")
GUIDANCE_MODES = ("inpaint", "guided")


def check_strategy(name: str) -> str:
    key = str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"execution strategy {name!r} is unknown: choose one of {list(STRATEGIES)}")
    return key


def blend(old: np.ndarray, new: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Cross-fade from ``old`` to ``new`` over their overlap (or its first ``steps`` actions).

    The weight of the new chunk rises linearly as (i + 1) / (n + 1), so the first merged action is still
    mostly the old plan and the last one of the fade is mostly the new chunk: no step at the switch is
    larger than 1 / (n + 1) of the two plans' disagreement plus the plans' own motion.
    """
    n = min(len(old), len(new))
    if steps is not None:
        n = min(n, int(steps))
    out = np.array(new, dtype=np.float64, copy=True)
    if n > 0:
        alpha = (np.arange(1, n + 1) / (n + 1))[:, None]
        out[:n] = (1 - alpha) * old[:n] + alpha * new[:n]
    return out


def ensemble(chunks: list[tuple[int, np.ndarray]], position: int, decay: float) -> np.ndarray:
    """Temporal ensembling (ACT-style): every chunk that covers a position votes for its action there.

    ``chunks`` are (position of the chunk's first action, chunk), oldest first; the i-th oldest chunk
    covering a position has weight ``exp(-decay * i)`` (decay > 0 trusts older chunks more, as ACT
    does; decay < 0 trusts newer ones). Returns the plan from ``position`` to the end of the newest chunk.
    """
    end = max(start + len(c) for start, c in chunks)
    length = max(0, end - position)
    dim = chunks[-1][1].shape[-1]
    total = np.zeros((length, dim))
    weight = np.zeros((length, 1))
    rank = np.zeros(length, dtype=int)  # how many older chunks already cover each position
    for start, chunk in chunks:
        lo, hi = max(start, position), start + len(chunk)
        if hi <= lo:
            continue
        idx = np.arange(lo - position, hi - position)
        w = np.exp(-decay * rank[idx])[:, None]
        total[idx] += w * chunk[lo - start : hi - start]
        weight[idx] += w
        rank[idx] += 1
    return total / np.maximum(weight, 1e-12)


def rtc_prefix_weights(delay: int, length: int) -> np.ndarray:
    """Real-time chunking's soft mask over the committed actions (Black, Galliker & Levine 2025).

    Weight 1 for the ``delay`` actions executed while the new chunk is computed (they are fixed);
    over the rest of the overlap the weight decays exponentially towards 0 at ``length``, so the new
    chunk agrees with the old plan near the switch and is free to change its mind later on.
    """
    if length < 0 or delay < 0:
        raise ValueError(f"delay={delay} and length={length} must be >= 0")
    i = np.arange(length, dtype=np.float64)
    weights = np.ones(length)
    soft = i >= delay
    c = (length - i[soft]) / (length - delay + 1)
    weights[soft] = c * np.expm1(c) / np.expm1(1.0)
    return weights


def rtc_fallback(old: np.ndarray, new: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Apply the RTC mask after sampling, for policies that cannot take a prefix (an approximation)."""
    n = min(len(old), len(new), len(weights))
    out = np.array(new, dtype=np.float64, copy=True)
    w = np.asarray(weights[:n])[:, None]
    out[:n] = w * old[:n] + (1 - w) * new[:n]
    return out
