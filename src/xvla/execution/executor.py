"""ActionExecutor: call it once per control tick; it returns the action to execute now.

    executor = ActionExecutor(policy_or_client, ExecutionConfig("rtc", execute_steps=10), control_dt=1 / 30)
    while running:
        action = executor.act(robot.observe())     # never waits for inference (real-time mode)
        robot.send(action if action is not None else robot.hold())
        sleep_until_next_tick()

Inference runs in one background thread. In *real-time* mode (``control_dt`` seconds per tick) the
tick only looks at whether the running inference has finished; the expected delay (how many ticks an
inference takes) comes from the measured latencies. In *simulated-time* mode (``delay_steps=N``) an
inference takes exactly N ticks whatever this machine's speed: its result is merged N ticks after
the observation it was computed from (waiting for the thread if needed), so benchmarks do not
depend on the computer they run on.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .scheduler import ChunkRequest, ChunkScheduler, ExecutionConfig, StepRecord
from .sources import accepts_prefix, as_source


class LatencyEstimate:
    """A cautious estimate of inference latency: the largest of the last ``window`` measurements."""

    def __init__(self, window: int = 8, initial_s: float = 0.0):
        self.samples: deque[float] = deque(maxlen=window)
        self.initial_s = float(initial_s)

    def add(self, seconds: float) -> None:
        self.samples.append(float(seconds))

    @property
    def seconds(self) -> float:
        return max(self.samples) if self.samples else self.initial_s

    def steps(self, control_dt: float) -> int:
        return math.ceil(self.seconds / control_dt - 1e-9)


class ActionExecutor:
    """Asynchronous chunk execution for one robot (see the module docstring).

    ``policy``: an ``XVLAPolicy`` (or anything with ``predict_action_chunk``), an ``xvla.serve.Client``,
    or a callable ``(observation, request) -> chunk [T, A]``. ``hold(last_action)`` gives the action
    to send while nothing is planned (default: repeat the last action, ``None`` before the first).
    ``seed`` / ``steps`` / ``config.guidance`` are passed to the built-in policy adapters.
    """

    def __init__(
        self,
        policy: Any,
        config: ExecutionConfig | str = "sync",
        *,
        delay_steps: int | None = None,
        control_dt: float | None = None,
        hold: Callable[[np.ndarray | None], Any] | None = None,
        seed: int | None = None,
        steps: int | None = None,
        initial_latency_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.config = ExecutionConfig(config) if isinstance(config, str) else config
        if (delay_steps is None) == (control_dt is None):
            raise ValueError(
                "give exactly one of delay_steps (simulated time: every inference takes that many ticks) "
                "or control_dt (real time: seconds per control tick)"
            )
        if delay_steps is not None and int(delay_steps) < 0:
            raise ValueError(f"delay_steps={delay_steps} is invalid: it must be >= 0")
        if control_dt is not None and not control_dt > 0:
            raise ValueError(f"control_dt={control_dt} is invalid: it must be > 0 seconds")
        self.delay_steps = None if delay_steps is None else int(delay_steps)
        self.control_dt = control_dt
        self.source = as_source(policy, seed=seed, steps=steps, guidance=self.config.guidance)
        self._honours_prefix = accepts_prefix(self.source)
        self.scheduler = ChunkScheduler(self.config, hold)
        self.latency = LatencyEstimate(initial_s=initial_latency_s)
        self.clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xvla-inference")
        self._future: Future | None = None

    # ------------------------------------------------------------------ control loop API
    def act(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        """The action for this tick (``None`` while nothing was ever planned and no ``hold`` is given)."""
        return self.step(observation).action

    def step(self, observation: Mapping[str, Any]) -> StepRecord:
        """Like :meth:`act`, with the bookkeeping: idle, switch, and which chunk and index the action is."""
        self._collect()
        request = self.scheduler.request(self.expected_delay)
        if request is not None:
            self._launch(observation, request)
            if self.delay_steps == 0:
                self._collect()  # zero simulated delay: the chunk is used at the tick it was asked for
        return self.scheduler.next_action()

    @property
    def expected_delay(self) -> int:
        """Ticks an inference is expected to take (exact in simulated time)."""
        if self.delay_steps is not None:
            return self.delay_steps
        return self.latency.steps(self.control_dt)

    @property
    def trace(self) -> list[StepRecord]:
        return self.scheduler.trace

    def reset(self) -> None:
        """Start a new episode: forget the plan; a running inference finishes but is not used."""
        self._future = None
        self.scheduler.reset()
        if hasattr(self.source, "episode"):
            self.source.episode += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ActionExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ background inference
    def _launch(self, observation: Mapping[str, Any], request: ChunkRequest) -> None:
        # The caller may reuse its buffers after this tick: the thread works on a copy.
        frozen = {
            k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in observation.items()
        }
        self._future = self._pool.submit(self._infer, frozen, request)

    def _infer(
        self, observation: Mapping[str, Any], request: ChunkRequest
    ) -> tuple[ChunkRequest, np.ndarray, float]:
        start = self.clock()
        chunk = self.source(observation, request)
        return request, np.asarray(chunk), self.clock() - start

    def _collect(self) -> None:
        """Merge the finished inference, if its (real or simulated) time has come."""
        future = self._future
        if future is None:
            return
        request = self.scheduler.in_flight
        if self.delay_steps is not None:
            if self.scheduler.tick < request.tick + self.delay_steps:
                return
        elif not future.done():
            return  # real time: never wait for the thread
        self._future = None
        try:
            done_request, chunk, seconds = (
                future.result()
            )  # a failed inference raises here, in the control loop
        except BaseException:
            self.scheduler.cancel()  # the next tick asks again
            raise
        self.latency.add(seconds)
        if done_request is request:
            self.scheduler.receive(request, chunk, honours_prefix=self._honours_prefix)
