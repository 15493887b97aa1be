"""Simulator workers: one process per environment, driven over a pipe (or in this process).

A worker is any object with ``handle(message) -> reply`` and ``close()``; :class:`WorkerPool` starts
``num_envs`` of them (``worker_cls(**kwargs)`` in each process, or one in this process when
``num_envs == 1``) and :func:`receive` reads a reply. Meta-World rollouts and LIBERO evaluation both
run on it. A worker that fails or dies ends the run with one line that says so (the worker's own
traceback goes to the log).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from ..utils import UserFacingError

logger = logging.getLogger(__name__)


def serve_worker(conn, worker_cls: type, kwargs: dict) -> None:
    """Process entry point: answer ``worker.handle`` messages until ('close',) or the pipe closes."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    warnings.filterwarnings("ignore")
    logging.getLogger("robosuite").setLevel(logging.ERROR)
    worker = worker_cls(**kwargs)
    try:
        while True:
            message = conn.recv()
            if message[0] == "close":
                break
            try:
                conn.send(worker.handle(message))
            except Exception as exc:  # noqa: BLE001 - sent back to the main process
                import traceback

                conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        worker.close()
        conn.close()


class InlineConn:
    """A worker in this process behind the pipe interface (one environment, tests, debugging)."""

    def __init__(self, worker_cls: type, kwargs: dict):
        self.worker = worker_cls(**kwargs)
        self.reply: tuple | None = None

    def send(self, message: tuple) -> None:
        if message[0] == "close":
            self.worker.close()
            return
        try:
            self.reply = self.worker.handle(message)
        except Exception as exc:  # noqa: BLE001 - the same failure report as a worker process
            import traceback

            self.reply = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())

    def recv(self) -> tuple:
        return self.reply

    def close(self) -> None:
        pass


class WorkerPool:
    """``num_envs`` workers, each in its own process (``inline``: in this one)."""

    def __init__(
        self, num_envs: int, worker_cls: type, kwargs: dict, context: Any = None, inline: bool | None = None
    ):
        self.procs: list = []
        self.conns: list = []
        if num_envs == 1 if inline is None else inline:
            self.conns = [InlineConn(worker_cls, kwargs) for _ in range(num_envs)]
            return
        import multiprocessing as mp

        ctx = context if context is not None else mp.get_context("spawn")
        for _ in range(num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve_worker, args=(child, worker_cls, kwargs), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def receive(conn, what: str = "simulator") -> tuple:
    """A worker's reply; a failed or dead worker becomes one :class:`UserFacingError` line."""
    try:
        reply = conn.recv()
    except (EOFError, ConnectionError, OSError):
        raise UserFacingError(
            f"a {what} worker process died (out of memory, or a crash in the renderer): run again with "
            "--num-envs 1 to see its error in this process"
        ) from None
    if reply[0] == "error":
        logger.error("%s worker traceback:\n%s", what, reply[2] if len(reply) > 2 else "")
        raise UserFacingError(f"a {what} worker failed: {reply[1]} (its traceback is in the log)")
    return reply
