"""Per-episode feature statistics and their aggregation, in LeRobot's stats.json layout.

Each feature gets min, max, mean, std, count and the quantiles q01, q10, q50, q90, q99. Vectors get one
value per dimension; cameras get one value per channel, shaped [3, 1, 1] and scaled to [0, 1]. Across
episodes min/max/mean/std/count combine exactly; quantiles are count-weighted means of the episodes'
quantiles (an approximation, the same one LeRobot makes).
"""

from __future__ import annotations

import numpy as np

from .format import QUANTILE_KEYS, QUANTILES


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of a numeric feature over frames: ``values`` is [frames] or [frames, *shape]."""
    values = np.asarray(values)
    n = values.shape[0]
    if values.ndim == 1:
        values = values[:, None]
    as_float = values.astype(np.float64)
    stats = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": as_float.mean(axis=0),
        "std": as_float.std(axis=0),
        "count": np.array([n]),
    }
    qs = np.quantile(as_float, QUANTILES, axis=0)
    for key, q in zip(QUANTILE_KEYS, qs, strict=True):
        stats[key] = q
    return stats


def image_stats(frames: np.ndarray, count: int | None = None) -> dict[str, np.ndarray]:
    """Per-channel stats of uint8 frames [N, H, W, C], in [0, 1] and shaped [C, 1, 1]."""
    frames = np.asarray(frames)
    c = frames.shape[-1]
    pixels = frames.reshape(-1, c).astype(np.float64) / 255.0
    stats = {
        "min": pixels.min(axis=0),
        "max": pixels.max(axis=0),
        "mean": pixels.mean(axis=0),
        "std": pixels.std(axis=0),
    }
    qs = np.quantile(pixels, QUANTILES, axis=0)
    for key, q in zip(QUANTILE_KEYS, qs, strict=True):
        stats[key] = q
    out = {k: v.reshape(c, 1, 1) for k, v in stats.items()}
    out["count"] = np.array([frames.shape[0] if count is None else count])
    return out


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats into dataset stats (exact for min/max/mean/std/count)."""
    keys: list[str] = []
    for stats in per_episode:
        keys += [k for k in stats if k not in keys]
    out = {}
    for key in keys:
        items = [s[key] for s in per_episode if key in s]
        counts = np.array([float(np.asarray(s["count"]).reshape(-1)[0]) for s in items])
        total = counts.sum()
        means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in items])
        stds = np.stack([np.asarray(s["std"], dtype=np.float64) for s in items])
        w = counts.reshape(-1, *([1] * (means.ndim - 1)))
        mean = (means * w).sum(axis=0) / total
        var = ((stds**2 + (means - mean) ** 2) * w).sum(axis=0) / total
        agg = {
            "min": np.min(np.stack([np.asarray(s["min"]) for s in items]), axis=0),
            "max": np.max(np.stack([np.asarray(s["max"]) for s in items]), axis=0),
            "mean": mean,
            "std": np.sqrt(np.maximum(var, 0.0)),
            "count": np.array([int(total)]),
        }
        for q in QUANTILE_KEYS:
            if all(q in s for s in items):
                agg[q] = (np.stack([np.asarray(s[q], dtype=np.float64) for s in items]) * w).sum(
                    axis=0
                ) / total
        out[key] = agg
    return out


class FrameSampler:
    """Keeps an evenly spaced subset (at most ``2 * target``) of a stream of small frames for image stats."""

    def __init__(self, target: int = 64, max_side: int = 96):
        self.target, self.max_side = target, max_side
        self.stride, self.seen = 1, 0
        self.frames: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        if self.seen % self.stride == 0:
            step = max(1, int(np.ceil(max(frame.shape[0], frame.shape[1]) / self.max_side)))
            self.frames.append(np.ascontiguousarray(frame[::step, ::step]))
            if len(self.frames) >= 2 * self.target:
                self.frames = self.frames[::2]
                self.stride *= 2
        self.seen += 1

    def stats(self) -> dict[str, np.ndarray]:
        return image_stats(np.stack(self.frames), count=self.seen)
