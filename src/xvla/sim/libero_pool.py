"""LIBERO episodes over a pool of simulator workers, one batched policy query per chunk.

Every simulator with an episode in progress waits for its next chunk; one ``predict_action_chunk`` call
serves them all, then each executes its chunk. A simulator whose episode ends takes the next pending
episode, preferring its current task (no scene rebuild). Each chunk's flow-matching noise comes from
(seed, task, episode, chunk), so the results depend neither on ``num_envs`` nor on the batching.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..execution.sources import chunk_seed, predict_seeded
from .episode_store import EpisodeStore
from .libero import IMAGE_KEY, WRIST_KEY
from .libero_worker import LiberoWorker, video_name
from .workers import WorkerPool, receive

if TYPE_CHECKING:
    from .libero_eval import LiberoEvalConfig


@dataclass
class EpisodeSpec:
    task_id: int
    episode: int
    record: bool = False


def episode_specs(task_ids: list[int], episodes_per_task: int, videos: int) -> list[EpisodeSpec]:
    """Task by task; episode 0 of the first ``videos`` tasks (then episode 1, ...) is recorded."""
    recorded = {(t, e) for e in range(episodes_per_task) for t in task_ids}
    recorded = set(sorted(recorded, key=lambda te: (te[1], task_ids.index(te[0])))[:videos])
    return [EpisodeSpec(t, e, (t, e) in recorded) for t in task_ids for e in range(episodes_per_task)]


def predict(policy: Any, batch: dict, seeds: list[int], steps: int | None) -> np.ndarray:
    """One chunk per sample of ``batch`` from an in-process or a remote policy, as float64 ee6d rows."""
    chunk = np.asarray(predict_seeded(policy, batch, seeds, steps), dtype=np.float64)
    if chunk.ndim != 3 or chunk.shape[0] != len(seeds) or chunk.shape[-1] < 10:
        raise ValueError(
            f"predict_action_chunk returned shape {chunk.shape}; LIBERO needs [{len(seeds)}, T, >=10] ee6d actions "
            "(xyz, rot6d, gripper): is this an ee6d checkpoint (action_mode='ee6d')?"
        )
    return chunk


@dataclass
class _Slot:
    conn: Any
    spec: EpisodeSpec | None = None
    obs: dict | None = None
    chunks: int = 0


def run_episodes(
    policy: Any,
    specs: list[EpisodeSpec],
    cfg: LiberoEvalConfig,
    instructions: list[str],
    store: EpisodeStore,
    bar: Any,
) -> dict[str, float]:
    """Run ``specs`` in ``cfg.num_envs`` simulators, storing each result as it finishes; return timings."""
    pending = deque(specs)
    timing = {"policy_s": 0.0, "env_s": 0.0, "chunks": 0, "env_steps": 0}
    context = mp.get_context(cfg.start_method)
    with WorkerPool(
        min(cfg.num_envs, len(specs)), LiberoWorker, _worker_kwargs(cfg), context=context
    ) as pool:
        slots = [_Slot(conn) for conn in pool.conns]
        _start(slots, pending)
        while any(s.spec is not None for s in slots):
            active = [s for s in slots if s.spec is not None]
            t0 = time.perf_counter()
            seeds = [chunk_seed(cfg.seed, s.spec.task_id, s.spec.episode, s.chunks) for s in active]
            chunk = predict(policy, _batch(active, instructions, cfg.domain_id), seeds, cfg.denoising_steps)
            timing["policy_s"] += time.perf_counter() - t0
            timing["chunks"] += 1
            t0 = time.perf_counter()
            finished = _execute(active, chunk, cfg.n_action_steps, store, bar, timing)
            timing["env_s"] += time.perf_counter() - t0
            _start(finished, pending)
    return timing


def _worker_kwargs(cfg: LiberoEvalConfig) -> dict[str, Any]:
    return dict(
        suite=cfg.suite,
        state_source=cfg.state_source,
        max_steps=cfg.max_steps,
        settle_steps=cfg.settle_steps,
        camera_size=cfg.camera_size,
        video_dir=str(Path(cfg.output) / "videos"),
    )


def _batch(slots: list[_Slot], instructions: list[str], domain_id: int) -> dict[str, Any]:
    return {
        IMAGE_KEY: np.stack([s.obs[IMAGE_KEY] for s in slots]),
        WRIST_KEY: np.stack([s.obs[WRIST_KEY] for s in slots]),
        "observation.state": np.stack([s.obs["observation.state"] for s in slots]),
        "task": [instructions[s.spec.task_id] for s in slots],
        "domain_id": int(domain_id),
    }


def _execute(
    active: list[_Slot],
    chunk: np.ndarray,
    n_action_steps: int | None,
    store: EpisodeStore,
    bar: Any,
    timing: dict,
) -> list[_Slot]:
    """Every simulator runs its rows at once (sent before any reply is read); the slots whose episode ended."""
    for s, rows in zip(active, chunk, strict=True):
        s.conn.send(("chunk", rows[: n_action_steps or len(rows)]))
        s.chunks += 1
    finished = []
    for s in active:
        _, s.obs, success, truncated, length = receive(s.conn, "LIBERO")
        if success or truncated:
            _finish(s, success, length, store, bar, timing)
            finished.append(s)
    return finished


def _start(slots: list[_Slot], pending: deque) -> None:
    """Send the next episodes (preferring each simulator's current task: no scene rebuild), then collect the resets."""
    started = []
    for slot in slots:
        if not pending:
            slot.spec = None
            continue
        last = slot.spec.task_id if slot.spec is not None else None
        pick = next((i for i, sp in enumerate(pending) if sp.task_id == last), 0)
        spec = pending[pick]
        del pending[pick]
        slot.spec, slot.chunks = spec, 0
        slot.conn.send(("reset", spec.task_id, spec.episode, spec.record))
        started.append(slot)
    for slot in started:
        slot.obs = receive(slot.conn, "LIBERO")[1]


def _finish(slot: _Slot, success: bool, length: int, store: EpisodeStore, bar: Any, timing: dict) -> None:
    spec = slot.spec
    video = f"videos/{video_name(spec.task_id, spec.episode)}" if spec.record else None
    # The final state makes runs comparable beyond success (resume, server vs in-process).
    final = [round(float(v), 6) for v in slot.obs["observation.state"][:9]]
    store.add(
        {
            "task_id": spec.task_id,
            "episode": spec.episode,
            "success": bool(success),
            "length": int(length),
            "chunks": slot.chunks,
            "final_state": final,
            "video": video,
        }
    )
    timing["env_steps"] += int(length)
    done = list(store.records.values())
    wins = sum(r["success"] for r in done)
    bar.update(1)
    bar.set_postfix_str(f"success {wins}/{len(done)} ({100 * wins / len(done):.1f}%)")
