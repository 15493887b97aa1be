"""Smoothness of an executed action sequence: jerk, jumps at chunk switches, idle ticks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scheduler import StepRecord


def motion_metrics(
    actions: np.ndarray,
    idle: Sequence[bool],
    switch: Sequence[bool],
    dims: Sequence[int] | None = None,
    jerk_order: int = 2,
) -> dict[str, float]:
    """Metrics of one episode's executed actions [N, A] (the hold actions included, as the robot got them).

    ``jerk_order`` finite differences of the actions give the jerk: 2 for velocity-like actions (an
    end-effector delta per step, as in Meta-World), 3 for position targets. Norms are Euclidean over
    ``dims`` (default: all channels), per control step (no division by the step length).
    """
    a = np.asarray(actions, dtype=np.float64)
    if dims is not None:
        a = a[:, list(dims)]
    jerk = np.linalg.norm(np.diff(a, n=jerk_order, axis=0), axis=-1) if len(a) > jerk_order else np.zeros(0)
    steps = np.linalg.norm(np.diff(a, axis=0), axis=-1) if len(a) > 1 else np.zeros(0)
    switch = np.asarray(switch, dtype=bool).copy()
    # A jump is the change of action at a tick where a new chunk takes over from an earlier one. The
    # first chunk starts the motion from rest, the same for every strategy: it is not a switch.
    first = np.flatnonzero(switch)
    if first.size:
        switch[first[0]] = False
    jumps = steps[switch[1:]] if len(switch) > 1 else np.zeros(0)
    return {
        "mean_jerk": float(jerk.mean()) if jerk.size else 0.0,
        "max_jerk": float(jerk.max()) if jerk.size else 0.0,
        "mean_switch_jump": float(jumps.mean()) if jumps.size else 0.0,
        "max_switch_jump": float(jumps.max()) if jumps.size else 0.0,
        "switches": int(switch.sum()),  # chunk-to-chunk switches (the first chunk not counted)
        "idle_steps": int(np.sum(np.asarray(idle, dtype=bool))),
    }


def trace_metrics(
    trace: Sequence[StepRecord],
    dims: Sequence[int] | None = None,
    jerk_order: int = 2,
    hold: np.ndarray | None = None,
) -> dict[str, float]:
    """:func:`motion_metrics` of an executor's trace; idle ticks without an action count as ``hold``."""
    known = [r.action for r in trace if r.action is not None]
    if not known:
        return motion_metrics(np.zeros((0, 1)), [], [], None, jerk_order)
    fill = np.zeros_like(np.asarray(known[0], dtype=np.float64)) if hold is None else hold
    actions = np.stack(
        [np.asarray(r.action if r.action is not None else fill, dtype=np.float64) for r in trace]
    )
    return motion_metrics(actions, [r.idle for r in trace], [r.switch for r in trace], dims, jerk_order)
