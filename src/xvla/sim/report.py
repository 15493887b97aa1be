"""The success report of a closed-loop evaluation, shared by ``xvla eval`` on Meta-World and on LIBERO.

Per task and overall: episodes, successes, the success rate with a 95% Wilson interval, and the mean
episode length over all episodes and over the successful ones; then the same as a markdown table.

    outcomes = [(task, success, length), ...]
    summary = summarize(outcomes, {task: instruction, ...})   # {"per_task": ..., "overall": ...}
    text = markdown_table(title, caption, {**summary, "videos": [...]}, instructions=True, decimals=1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for the default z); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return lo, hi


def success_stats(outcomes: list[tuple[bool, int]]) -> dict[str, Any]:
    """Counts, rate, 95% interval and mean lengths of ``(success, length)`` episodes."""
    n = len(outcomes)
    k = sum(bool(success) for success, _ in outcomes)
    lo, hi = wilson_interval(k, n)
    ok = [length for success, length in outcomes if success]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "mean_length": float(np.mean([length for _, length in outcomes])) if outcomes else None,
        "mean_length_success": float(np.mean(ok)) if ok else None,
    }


def summarize(outcomes: Iterable[tuple[Any, bool, int]], tasks: Mapping[Any, str]) -> dict[str, Any]:
    """``(task, success, length)`` episodes -> per-task stats (keyed by ``str(task)``, in the order of
    ``tasks``, which maps each task to its instruction) and overall stats with the mean of the task rates."""
    outcomes = list(outcomes)
    per_task = {}
    for task, text in tasks.items():
        stats = success_stats([(s, n) for t, s, n in outcomes if t == task])
        per_task[str(task)] = {"instruction": text, **stats}
    overall = success_stats([(s, n) for _, s, n in outcomes])
    overall["mean_task_success_rate"] = float(np.mean([st["success_rate"] for st in per_task.values()]))
    return {"per_task": per_task, "overall": overall}


def markdown_table(
    title: str, caption: str, report: Mapping[str, Any], instructions: bool, decimals: int
) -> str:
    """``# title``, the caption, one row per task and one for all, and links to the videos.

    ``decimals`` of the percentages: a LIBERO suite's 500 episodes move the rate in steps of 0.2%, a
    Meta-World task's 10 in steps of 10%."""
    header = [
        "task",
        *(["instruction"] if instructions else []),
        "success",
        "95% CI",
        "mean length",
        "mean length (success)",
    ]
    lines = [f"# {title}", "", caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, st in report["per_task"].items():
        lines.append(_row(task, st["instruction"] if instructions else None, st, decimals))
    lines.append(_row("**all**", "" if instructions else None, report["overall"], decimals))
    if report.get("videos"):
        lines += ["", "Videos: " + ", ".join(f"[{Path(v).name}]({v})" for v in report["videos"])]
    return "\n".join(lines) + "\n"


def _row(name: str, instruction: str | None, st: Mapping[str, Any], decimals: int) -> str:
    lo, hi = st["ci95"]
    ml = f"{st['mean_length']:.1f}" if st["mean_length"] is not None else "-"
    mls = f"{st['mean_length_success']:.1f}" if st["mean_length_success"] is not None else "-"
    cells = [
        name,
        *([instruction] if instruction is not None else []),
        f"{st['successes']}/{st['episodes']} ({100 * st['success_rate']:.{decimals}f}%)",
        f"{100 * lo:.{decimals}f}-{100 * hi:.{decimals}f}%",
        ml,
        mls,
    ]
    return "| " + " | ".join(cells) + " |"
