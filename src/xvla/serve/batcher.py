"""Dynamic batching: gather concurrent samples for a few milliseconds, run them as one forward pass.

One worker thread owns the model. Request handlers :meth:`~DynamicBatcher.submit` samples and get
a :class:`concurrent.futures.Future` back (an asyncio handler awaits it with
``asyncio.wrap_future``). The worker takes the first waiting sample, keeps collecting until it
has ``max_batch_size`` samples or ``timeout_s`` has passed since that first sample (it stops
waiting early when the queue is empty and no request is announced as on its way, see
:meth:`~DynamicBatcher.arriving`), splits what it
has by batch key (samples with different denoising steps or view counts cannot share a pass),
runs each group and resolves the futures. The model never runs on the event loop.

If a batched pass fails, each sample of it is retried alone, so one poisoned sample cannot fail
the others; the failing one gets the exception.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("xvla.serve")


class QueueFullError(RuntimeError):
    """The server has more waiting samples than ``max_queue``: answered 503, retry later."""


class ShuttingDownError(RuntimeError):
    """The batcher was stopped: no new work is accepted."""


@dataclass
class BatchResult:
    value: Any
    batch_size: int
    queue_s: float  # from submit to the start of the forward pass
    run_s: float  # the forward pass


@dataclass
class _Item:
    payload: Any
    key: Hashable
    future: Future
    submitted: float = field(default_factory=time.perf_counter)


_STOP = object()


@dataclass
class BatcherStats:
    samples: int = 0
    batches: int = 0
    failures: int = 0
    max_batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "batches": self.batches,
            "failed_samples": self.failures,
            "mean_batch_size": round(self.samples / self.batches, 3) if self.batches else 0.0,
            "max_batch_size_seen": self.max_batch,
        }


class DynamicBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 8,
        timeout_s: float = 0.005,
        max_queue: int = 256,
        name: str = "xvla-batcher",
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} is invalid: it must be >= 1")
        if timeout_s < 0:
            raise ValueError(f"batch timeout {timeout_s}s is invalid: it must be >= 0")
        self.run_batch = run_batch
        self.max_batch_size = int(max_batch_size)
        self.timeout_s = float(timeout_s)
        self.max_queue = int(max_queue)
        self.stats = BatcherStats()
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._arriving = 0
        self._lock = threading.Lock()
        self._accepting = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> DynamicBatcher:
        self._accepting = True
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop accepting work, finish everything already submitted, then end the worker."""
        with self._lock:
            was_accepting = self._accepting
            self._accepting = False
        if was_accepting:
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def running(self) -> bool:
        return self._accepting and self._thread.is_alive()

    # ------------------------------------------------------------------ producer side
    def arriving(self, delta: int) -> None:
        """Announce (+1) or withdraw (-1) a request that is being decoded and will submit soon.

        While none is announced and the queue is empty, the worker runs what it has at once instead
        of waiting out the gathering window: a lone robot pays no batching latency.
        """
        with self._lock:
            self._arriving += delta

    def submit(self, payload: Any, key: Hashable = None) -> Future:
        future: Future = Future()
        with self._lock:
            if not self._accepting:
                raise ShuttingDownError("the server is shutting down and accepts no new requests")
            if self._pending >= self.max_queue:
                raise QueueFullError(
                    f"{self._pending} samples are already waiting (max_queue={self.max_queue})"
                )
            self._pending += 1
            self._queue.put(_Item(payload, key, future))  # under the lock: never after _STOP
        return future

    # ------------------------------------------------------------------ worker side
    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            items = [first]
            deadline = first.submitted + self.timeout_s
            while len(items) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining > 0 and self._arriving == 0 and self._queue.empty():
                    break  # nobody else is on the way: waiting would only add latency
                try:
                    if remaining > 0:
                        item = self._queue.get(timeout=min(remaining, 0.001))
                    else:
                        item = self._queue.get_nowait()
                except queue.Empty:
                    if remaining > 0:
                        continue
                    break
                if item is _STOP:
                    stopping = True  # finish what was gathered, then leave (nothing can follow _STOP)
                    break
                items.append(item)
            self._process(items)

    def _process(self, items: list[_Item]) -> None:
        groups: dict[Hashable, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.key, []).append(item)
        for group in groups.values():
            live = [it for it in group if it.future.set_running_or_notify_cancel()]
            with self._lock:
                self._pending -= len(group) - len(live)
            if live:
                self._run_group(live)

    def _run_group(self, group: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            values = list(self.run_batch([it.payload for it in group]))
            if len(values) != len(group):
                raise RuntimeError(f"run_batch returned {len(values)} results for {len(group)} samples")
        except Exception as exc:  # noqa: BLE001 - isolated below, then reported per sample
            if len(group) > 1:
                logger.warning(
                    "a batch of %d failed (%s: %s); retrying its samples one by one",
                    len(group),
                    type(exc).__name__,
                    exc,
                )
                for item in group:
                    self._run_group([item])
                return
            self._finish(group, error=exc, start=start)
            return
        self._finish(group, values=values, start=start)

    def _finish(
        self,
        group: list[_Item],
        start: float,
        values: list[Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        end = time.perf_counter()
        with self._lock:
            self._pending -= len(group)
            self.stats.batches += 1
            self.stats.samples += len(group)
            self.stats.max_batch = max(self.stats.max_batch, len(group))
            if error is not None:
                self.stats.failures += len(group)
        for i, item in enumerate(group):
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(
                    BatchResult(values[i], len(group), start - item.submitted, end - start)
                )
