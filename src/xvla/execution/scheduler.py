"""The executor's clock-free core: when to ask for a chunk, how to align and merge it, what to execute.

Time is counted in two ways. A *tick* is one control step. The *position* counts the planned
actions the robot has executed; it does not advance while the robot holds (nothing planned). A
chunk computed from the observation taken at position ``p`` holds the actions for positions
``p, p + 1, ...``; when it arrives at position ``q`` its first ``q - p`` actions are in the past
(the robot executed the previous plan meanwhile) and are skipped. A robot that held still while
waiting (``sync``, or a plan that ran out) did not move, so nothing is skipped for those ticks.

A :class:`ChunkScheduler` has no threads and no clock: :class:`~xvla.execution.ActionExecutor`
drives it in real or simulated time, and batched simulator rollouts drive it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import strategies as st


@dataclass(frozen=True)
class ExecutionConfig:
    """How chunks are executed.

    ``execute_steps``: actions of each chunk executed before the next chunk should take over (the
    execution horizon, ``n_action_steps``); ``None`` = the whole chunk. Asynchronous strategies ask
    for the next chunk ``execute_steps`` positions after the current one's observation, or earlier
    when the expected delay would otherwise let the plan run out.
    """

    strategy: str = "sync"
    execute_steps: int | None = None
    blend_steps: int | None = None  # blend: cross-fade length (None: execute_steps, or the whole overlap)
    ensemble_decay: float = 0.01  # ensemble: weight exp(-decay * i), i = 0 for the oldest chunk (ACT's m)
    guidance: str = "inpaint"  # rtc: "inpaint" (exact committed prefix) or "guided" (vector-Jacobian)
    margin_steps: int = 0  # extra control steps of slack when deciding how early to ask

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", st.check_strategy(self.strategy))
        if self.guidance not in st.GUIDANCE_MODES:
            raise ValueError(
                f"guidance={self.guidance!r} is unknown: choose one of {list(st.GUIDANCE_MODES)}"
            )
        for name in ("execute_steps", "blend_steps"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name}={value} is invalid: it must be >= 1 (or None)")
        if self.margin_steps < 0:
            raise ValueError(f"margin_steps={self.margin_steps} is invalid: it must be >= 0")


@dataclass
class ChunkRequest:
    """One inference to run: the observation's tick/position, the expected delay and, for rtc, the prefix."""

    number: int  # chunk number within the episode (0, 1, ...)
    tick: int
    position: int
    delay: int  # expected inference delay in control steps (rtc: the prefix actions with weight 1)
    prefix: np.ndarray | None = None  # [L, A] the plan from ``position`` on (rtc only)
    prefix_weights: np.ndarray | None = None  # [L]


@dataclass
class StepRecord:
    tick: int
    action: np.ndarray | None
    idle: bool  # nothing planned: the hold action (or None) was returned
    switch: bool = False  # the first action taken from a newly merged plan
    chunk: int = -1  # number of the newest chunk behind this action (-1 when idle)
    index: int = -1  # index of this action within that chunk


@dataclass
class _Plan:
    start: int  # position of actions[0]
    actions: np.ndarray  # [n, A]
    chunk: np.ndarray  # [n] newest chunk number behind each action
    index: np.ndarray  # [n] index within that chunk


class ChunkScheduler:
    """Plans the actions of one robot from a stream of chunks (see the module docstring)."""

    def __init__(
        self, config: ExecutionConfig, hold: Callable[[np.ndarray | None], np.ndarray | None] | None = None
    ):
        self.config = config
        self.hold = hold or (lambda last: None if last is None else np.array(last, copy=True))
        self.reset()

    def reset(self) -> None:
        self.tick = 0
        self.position = 0
        self.in_flight: ChunkRequest | None = None
        self.trace: list[StepRecord] = []
        self._plan: _Plan | None = None
        self._chunks: list[tuple[int, np.ndarray]] = []  # ensemble: (start position, chunk)
        self._anchor: int | None = None  # observation position of the newest merged chunk
        self._chunk_len = 0
        self._requests = 0
        self._switch = False
        self._last: np.ndarray | None = None

    # ------------------------------------------------------------------ planning
    @property
    def remaining(self) -> int:
        """Planned actions left from the current position."""
        if self._plan is None:
            return 0
        return max(0, self._plan.start + len(self._plan.actions) - self.position)

    def planned(self) -> np.ndarray:
        """The plan from the current position on ([remaining, A])."""
        if self._plan is None:
            return np.zeros((0, 0))
        return self._plan.actions[self.position - self._plan.start :]

    def should_request(self, delay: int) -> bool:
        if self.in_flight is not None:
            return False
        if self.remaining == 0 or self._anchor is None:
            return True
        if self.config.strategy == "sync":
            return False  # sync asks only once the horizon is used up (the plan is cut there)
        horizon = self.config.execute_steps or self._chunk_len
        interval = max(1, min(horizon, self._chunk_len - delay - self.config.margin_steps))
        return self.position - self._anchor >= interval

    def request(self, delay: int) -> ChunkRequest | None:
        """A new request if one should start now (it is then in flight until :meth:`receive`)."""
        delay = max(0, int(delay))
        if not self.should_request(delay):
            return None
        req = ChunkRequest(self._requests, self.tick, self.position, delay)
        if self.config.strategy == "rtc" and self.remaining > 0:
            req.prefix = np.array(self.planned(), dtype=np.float32, copy=True)
            req.prefix_weights = st.rtc_prefix_weights(delay, len(req.prefix)).astype(np.float32)
        self._requests += 1
        self.in_flight = req
        return req

    def cancel(self) -> None:
        """Forget the request in flight (its result will not be merged)."""
        self.in_flight = None

    # ------------------------------------------------------------------ merging
    def receive(self, request: ChunkRequest, chunk: np.ndarray, *, honours_prefix: bool = True) -> int:
        """Merge the chunk computed for ``request`` at the current position; returns the actions skipped.

        ``honours_prefix=False`` (a policy that cannot take rtc's prefix) applies rtc's mask after
        sampling instead.
        """
        if self.in_flight is not request:
            raise ValueError(
                f"chunk {request.number} was not the request in flight; ask with request() first"
            )
        self.in_flight = None
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or len(chunk) == 0:
            raise ValueError(f"a chunk must be [T, action_dim] with T >= 1, got shape {chunk.shape}")
        if self.config.strategy == "rtc" and request.prefix is not None and not honours_prefix:
            chunk = st.rtc_fallback(request.prefix, chunk, request.prefix_weights)
        skip = self.position - request.position
        self._chunk_len = len(chunk)
        if skip >= len(chunk):
            return skip  # it arrived too late to be of any use: the next request starts at once
        self._anchor = request.position
        new = chunk[skip:]
        merged = self._merge(request, chunk, new)
        count = len(merged)
        index = np.arange(skip, skip + count)
        self._plan = _Plan(self.position, merged, np.full(count, request.number), index)
        self._switch = True
        return skip

    def _merge(self, request: ChunkRequest, chunk: np.ndarray, new: np.ndarray) -> np.ndarray:
        strategy = self.config.strategy
        old = self.planned() if self.remaining else np.zeros((0, new.shape[-1]))
        if strategy == "sync":
            horizon = self.config.execute_steps or len(chunk)
            return new[: max(1, horizon - (len(chunk) - len(new)))]
        if strategy == "blend":
            # By default the fade ends when the next chunk is due, so every chunk fully takes over once.
            steps = (
                self.config.blend_steps if self.config.blend_steps is not None else self.config.execute_steps
            )
            return st.blend(old, new, steps)
        if strategy == "ensemble":
            self._chunks = [(s, c) for s, c in self._chunks if s + len(c) > self.position]
            self._chunks.append((request.position, chunk))
            return st.ensemble(self._chunks, self.position, self.config.ensemble_decay)
        return new  # replace, and rtc (the policy already made the chunk agree with the committed prefix)

    # ------------------------------------------------------------------ executing
    def next_action(self) -> StepRecord:
        """The action for this tick (advances the tick, and the position unless the robot holds)."""
        if self.remaining:
            i = self.position - self._plan.start
            action = self._plan.actions[i]
            record = StepRecord(
                self.tick, action, False, self._switch, int(self._plan.chunk[i]), int(self._plan.index[i])
            )
            self._switch = False
            self.position += 1
            self._last = action
        else:
            record = StepRecord(self.tick, self.hold(self._last), True)
        self.tick += 1
        self.trace.append(record)
        return record
