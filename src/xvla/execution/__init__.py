"""Real-time execution of action chunks: the robot keeps moving while the next chunk is computed.

- :class:`ActionExecutor`: called once per control tick, returns the action to execute; inference
  runs in a background thread, in real time (measured latency) or simulated time (``delay_steps``).
- :class:`ChunkScheduler`: the clock-free core (when to ask, how to align and merge chunks).
- strategies: ``sync`` (hold while waiting), ``replace``, ``blend``, ``ensemble``, ``rtc``
  (real-time chunking: the policy samples a chunk that agrees with the committed actions).
- :func:`motion_metrics`: jerk, jumps at chunk switches and idle ticks of an executed trace.

No HTTP and no simulator in here: policies come in through :mod:`xvla.execution.sources`.
"""

from .executor import ActionExecutor, LatencyEstimate
from .metrics import motion_metrics, trace_metrics
from .scheduler import ChunkRequest, ChunkScheduler, ExecutionConfig, StepRecord
from .sources import PolicySource, as_source, chunk_seed, predict_seeded
from .strategies import STRATEGIES, blend, ensemble, rtc_prefix_weights

__all__ = [
    "STRATEGIES",
    "ActionExecutor",
    "ChunkRequest",
    "ChunkScheduler",
    "ExecutionConfig",
    "LatencyEstimate",
    "PolicySource",
    "StepRecord",
    "as_source",
    "blend",
    "chunk_seed",
    "ensemble",
    "motion_metrics",
    "predict_seeded",
    "rtc_prefix_weights",
    "trace_metrics",
]
