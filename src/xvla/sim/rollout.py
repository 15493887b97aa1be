"""Closed-loop rollouts: one policy in this process, a pool of simulators in worker processes.

Every simulator runs one episode at a time from a shared list of episodes (task, layout seed). Each
robot's chunks are executed by its own :class:`~xvla.execution.ChunkScheduler`: at each step the
robots that should ask for a chunk are batched into one ``policy.predict_action_chunk`` call, and
every robot executes one action of its plan. With the default execution (``sync``, no delay) the
first ``n_action_steps`` actions of each chunk are executed one per step and the robot asks again
when they are used up (receding horizon, as ``XVLAPolicy.select_action`` does). With
``delay_steps=N`` an inference takes N control steps of simulated time: the chunk is merged N steps
after its observation, by the chosen strategy (``replace``, ``blend``, ``ensemble``, ``rtc``), or
the robot holds still while it waits (``sync``). Finished environments immediately start the next
episode from the list.

Results do not depend on the number of environments or on this machine's speed: layouts come from
``episode_seed`` and the flow-matching noise of every chunk from a generator seeded by (noise seed,
episode seed, chunk number), for an in-process policy and a :class:`~xvla.serve.RemotePolicy` alike
(:func:`xvla.execution.predict_seeded`).

A policy is any object with ``predict_action_chunk(batch) -> [B, T, A]`` (torch tensor or numpy)
that reads the LeRobot keys ``observation.images.<slot>``, ``observation.state``, ``task`` and
``domain_id``. Its actions are in the variant's action space and are mapped back to the simulator
by the variant's ``ActionTransform.to_env``. A scripted policy that sets ``uses_environment_state
= True`` also receives ``observation.environment_state`` (Meta-World's 39-D observation) and
``task_name``; learned policies never see them.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..execution import (
    ChunkRequest,
    ChunkScheduler,
    ExecutionConfig,
    chunk_seed,
    motion_metrics,
    predict_seeded,
)
from ..processor import rename_keys
from .instructions import canonical_task, instruction
from .variants import EmbodimentVariant, get_variant
from .workers import WorkerPool, receive

logger = logging.getLogger(__name__)


@dataclass
class EpisodeSpec:
    task: str
    index: int  # layout index within the task
    seed: int  # layout seed (episode_seed(base, task, index))
    record: bool = False  # keep the frames for a video


@dataclass
class EpisodeResult:
    task: str
    index: int
    seed: int
    success: bool
    length: int  # variant actions executed
    reward: float
    frames: list[np.ndarray] | None = None  # cameras side by side, when recorded
    final_state: np.ndarray | None = None  # observation.state after the last action
    motion: dict[str, float] | None = (
        None  # jerk, jumps at chunk switches, idle steps (xvla.execution.motion_metrics)
    )


@dataclass
class _Slot:
    conn: Any
    spec: EpisodeSpec | None = None
    number: int = -1
    obs: dict | None = None
    raw: np.ndarray | None = None
    scheduler: ChunkScheduler | None = None
    arrivals: list = field(default_factory=list)  # (tick, request, chunk) not yet merged
    env_actions: list = field(default_factory=list)  # simulator actions executed (for the motion metrics)
    length: int = 0
    reward: float = 0.0
    frames: list | None = None


# ---------------------------------------------------------------------------------------------- env workers
class MetaWorldWorker:
    """One simulator process: ('reset', task, seed) | ('step', action) -> (ok, obs, raw, reward, term, trunc)."""

    def __init__(self, variant: dict, max_steps: int, privileged: bool):
        self.variant = EmbodimentVariant.from_dict(variant)
        self.max_steps, self.privileged = max_steps, privileged
        self.envs: dict[str, Any] = {}
        self.env = None

    def handle(self, message: tuple) -> tuple:
        import warnings

        from .metaworld_env import MetaWorldEnv

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            if message[0] == "reset":
                _, task, seed = message
                if task not in self.envs:
                    if len(self.envs) >= 4:  # bound memory and GL contexts on long task lists
                        self.envs.pop(next(iter(self.envs))).close()
                    self.envs[task] = MetaWorldEnv(
                        task, self.variant, privileged_state=self.privileged, max_episode_steps=self.max_steps
                    )
                self.env = self.envs[task]
                obs, _ = self.env.reset(seed=seed)
                return ("ok", obs, self.env.raw_observation, 0.0, False, False)
            if message[0] == "step":
                obs, reward, term, trunc, _ = self.env.step(message[1])
                return ("ok", obs, self.env.raw_observation, float(reward), bool(term), bool(trunc))
        raise ValueError(f"unknown command {message[0]!r}")

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


def metaworld_pool(
    variant: EmbodimentVariant,
    num_envs: int,
    max_steps: int,
    privileged: bool = False,
    start_method: str | None = None,
    inline: bool | None = None,
) -> WorkerPool:
    """``num_envs`` Meta-World simulators of one variant (fork or forkserver: see ``demos.mp_context``)."""
    from .gen_demos import mp_context

    kwargs = dict(variant=variant.to_dict(), max_steps=max_steps, privileged=privileged)
    context = None if (inline if inline is not None else num_envs == 1) else mp_context(start_method)
    return WorkerPool(num_envs, MetaWorldWorker, kwargs, context=context, inline=inline)


def _receive(conn) -> tuple:
    return receive(conn, "Meta-World")


# ---------------------------------------------------------------------------------------------- policy glue
def chunk_to_control_rate(chunk: np.ndarray, fps: float, horizon_s: float | None) -> np.ndarray:
    """A chunk of N points at times k * horizon_s / N (``action_horizon_s`` training) -> actions at 1/fps.

    ``horizon_s=None``: the chunk is already at the control rate.
    """
    if horizon_s is None:
        return chunk
    n = chunk.shape[0]
    last = (n - 1) * horizon_s / n
    times = np.arange(0.0, last + 1e-9, 1.0 / fps)
    pos = times * n / horizon_s
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None]
    return chunk[lo] * (1 - w) + chunk[hi] * w


def _predict(
    policy: Any, batch: dict, seeds: list[int], steps: int | None, constraint: dict | None = None
) -> np.ndarray:
    """One chunk per robot, seeded as every evaluation seeds an in-process or a remote policy."""
    chunk = np.asarray(predict_seeded(policy, batch, seeds, steps, **(constraint or {})), dtype=np.float32)
    if chunk.ndim == 2:
        chunk = chunk[:, None]
    if chunk.ndim != 3 or chunk.shape[0] != len(seeds):
        raise ValueError(f"predict_action_chunk returned shape {chunk.shape}; expected [{len(seeds)}, T, A]")
    return chunk


def _prefix_kwargs(requests: list[ChunkRequest], guidance: str) -> dict[str, Any]:
    """rtc's committed prefixes of several robots, zero-padded (weight 0) to one length."""
    import torch

    length = max(len(r.prefix) for r in requests)
    width = requests[0].prefix.shape[-1]
    prefix = torch.zeros(len(requests), length, width)
    weights = torch.zeros(len(requests), length)
    for i, r in enumerate(requests):
        prefix[i, : len(r.prefix)] = torch.from_numpy(r.prefix)
        weights[i, : len(r.prefix)] = torch.from_numpy(r.prefix_weights)
    return {"prefix": prefix, "prefix_weights": weights, "guidance": guidance}


def _hold_action(variant: EmbodimentVariant):
    """What a Meta-World arm does while it has nothing planned: no motion, the gripper as it was."""
    transform = variant.action

    def hold(last: np.ndarray | None) -> np.ndarray:
        out = np.zeros(transform.action_dim if last is None else len(last), dtype=np.float32)
        out[transform.gripper_index] = (
            transform.gripper_offset if last is None else last[transform.gripper_index]
        )
        return out

    return hold


def _batch(
    slots: list[_Slot], domain_id: int, env_state: bool, key_map: dict[str, str] | None
) -> dict[str, Any]:
    stacked = {k: np.stack([s.obs[k] for s in slots]) for k in slots[0].obs}
    batch: dict[str, Any] = rename_keys(stacked, key_map or {}, "simulator observation")  # model key=sim key
    batch["task"] = [instruction(s.spec.task) for s in slots]
    batch["domain_id"] = domain_id
    if env_state:
        batch["observation.environment_state"] = np.stack([s.raw for s in slots])
        batch["task_name"] = [s.spec.task for s in slots]
    return batch


def _side_by_side(obs: dict, keys: list[str]) -> np.ndarray:
    return np.concatenate([obs[k] for k in keys], axis=1)


# ---------------------------------------------------------------------------------------------- main loop
@dataclass
class _Settings:
    max_steps: int
    domain_id: int
    denoising_steps: int | None
    action_horizon_s: float | None
    noise_seed: int
    env_state: bool
    key_map: dict[str, str] | None
    execution: ExecutionConfig
    delay_steps: int
    honours_prefix: bool


def run_rollouts(
    policy: Any,
    episodes: list[EpisodeSpec],
    variant: str | EmbodimentVariant,
    *,
    num_envs: int = 2,
    max_steps: int = 200,
    domain_id: int | None = None,
    n_action_steps: int | None = None,
    denoising_steps: int | None = None,
    action_horizon_s: float | None = None,
    noise_seed: int = 0,
    privileged_state: bool = False,
    start_method: str | None = None,
    progress: bool = True,
    inline: bool | None = None,
    key_map: dict[str, str] | None = None,
    execution: str | ExecutionConfig = "sync",
    delay_steps: int = 0,
) -> tuple[list[EpisodeResult], dict[str, float]]:
    """Run every episode of ``episodes`` with ``policy``; return the results (in the order given) and timings.

    ``key_map`` goes model key -> simulator key (e.g. ``{"observation.images.front":
    "observation.images.main"}``) for a policy whose cameras were named differently in training.
    ``execution`` (a strategy name or an :class:`~xvla.execution.ExecutionConfig`) and ``delay_steps``
    choose how chunks are executed while inference takes ``delay_steps`` control steps of simulated
    time; the default (``sync``, 0) executes ``n_action_steps`` of each chunk and then asks again.
    """
    variant = get_variant(variant)
    if not episodes:
        raise ValueError("no episodes to run")
    if n_action_steps is None:
        n_action_steps = _policy_execute_steps(policy)
    settings = _settings(
        policy,
        variant,
        execution,
        delay_steps,
        n_action_steps,
        action_horizon_s,
        max_steps,
        domain_id,
        denoising_steps,
        noise_seed,
        key_map,
    )
    episodes = [EpisodeSpec(canonical_task(e.task), e.index, e.seed, e.record) for e in episodes]
    _ready_for_evaluation(policy)
    from .gen_demos import progress_bar

    bar = progress_bar(len(episodes), f"eval {variant.name}", progress)
    start = time.perf_counter()
    with metaworld_pool(
        variant, min(num_envs, len(episodes)), max_steps, privileged_state, start_method, inline
    ) as pool:
        runner = _Rollout(policy, episodes, variant, settings, pool, bar)
        results = runner.run()
    bar.close()
    runner.timings["wall_s"] = time.perf_counter() - start
    return [results[i] for i in range(len(episodes))], runner.timings


def _policy_execute_steps(policy: Any) -> int | None:
    """The actions of each chunk a policy executes before asking again: its config's, or what its server reports.

    None for a policy without the setting (a scripted expert executes its whole chunk).
    """
    steps = getattr(getattr(policy, "config", None), "n_action_steps", None)
    if steps is None and hasattr(policy, "n_action_steps"):
        steps = policy.n_action_steps
        if steps is None:  # a remote policy whose server does not say: guessing would change the results
            raise ValueError(
                "the policy server does not report n_action_steps: pass n_action_steps= (--n-action-steps) "
                "to execute chunks as the checkpoint was trained to"
            )
    return steps


def _ready_for_evaluation(policy: Any) -> None:
    """An empty action queue and eval mode, for the policies that have them (a scripted expert may not)."""
    if hasattr(policy, "reset"):
        policy.reset()
    if hasattr(policy, "eval"):
        policy.eval()


def _settings(
    policy,
    variant,
    execution,
    delay_steps,
    n_action_steps,
    action_horizon_s,
    max_steps,
    domain_id,
    denoising_steps,
    noise_seed,
    key_map,
) -> _Settings:
    if isinstance(execution, str):
        execution = ExecutionConfig(execution, execute_steps=n_action_steps)
    if int(delay_steps) < 0:
        raise ValueError(f"delay_steps={delay_steps} is invalid: it must be >= 0 control steps")
    if execution.strategy == "rtc" and action_horizon_s is not None:
        raise ValueError(
            "execution 'rtc' needs chunks at the control rate, but action_horizon_s is set (the chunk is "
            "resampled): use 'blend' or 'ensemble' with this policy"
        )
    predict = getattr(policy, "predict_action_chunk", None)
    honours = predict is not None and "prefix" in inspect.signature(predict).parameters
    return _Settings(
        max_steps=max_steps,
        domain_id=variant.domain_id if domain_id is None else int(domain_id),
        denoising_steps=denoising_steps,
        action_horizon_s=action_horizon_s,
        noise_seed=noise_seed,
        env_state=bool(getattr(policy, "uses_environment_state", False)),
        key_map=key_map,
        execution=execution,
        delay_steps=int(delay_steps),
        honours_prefix=honours,
    )


class _Rollout:
    """One batched closed loop over a pool of simulators, each robot with its own chunk scheduler.

    Each tick: chunks whose simulated inference time is over are merged, the robots that should ask
    for a chunk are batched into one policy call (results wait ``delay_steps`` ticks before they are
    merged), then every robot executes one action.
    """

    def __init__(self, policy, episodes, variant, settings: _Settings, pool: WorkerPool, bar):
        self.policy, self.variant, self.s, self.bar = policy, variant, settings, bar
        self.pending = deque(enumerate(episodes))
        self.results: dict[int, EpisodeResult] = {}
        self.slots = [_Slot(conn) for conn in pool.conns]
        self.hold = _hold_action(variant)
        self.timings = {"policy_s": 0.0, "env_s": 0.0, "env_steps": 0, "chunks": 0}
        self.successes = 0

    def run(self) -> dict[int, EpisodeResult]:
        for slot in self.slots:
            self.start_episode(slot)
        for slot in self.slots:
            if slot.spec is not None:
                self.receive_reset(slot)
        while any(s.spec is not None for s in self.slots):
            active = [s for s in self.slots if s.spec is not None]
            for s in active:
                self.merge_arrivals(s)
            self.request_chunks(active)
            finished = self.step_envs(active)
            for s in finished:
                self.bar.update(1)
                self.bar.set_postfix_str(f"success {self.successes}/{len(self.results)}")
                self.start_episode(s)
            for s in finished:
                if s.spec is not None:
                    self.receive_reset(s)
        return self.results

    def start_episode(self, slot: _Slot) -> bool:
        if not self.pending:
            slot.spec = None
            return False
        # Prefer an episode of the task this simulator already has (building an env costs ~0.3 s);
        # outcomes do not depend on which simulator runs an episode.
        last = slot.spec.task if slot.spec is not None else None
        pick = next((i for i, (_, sp) in enumerate(self.pending) if sp.task == last), 0)
        number, spec = self.pending[pick]
        del self.pending[pick]
        slot.spec, slot.number = spec, number
        slot.scheduler = ChunkScheduler(self.s.execution, self.hold)
        slot.arrivals, slot.env_actions = [], []
        slot.length, slot.reward = 0, 0.0
        slot.conn.send(("reset", spec.task, spec.seed))
        return True

    def receive_reset(self, slot: _Slot) -> None:
        _, slot.obs, slot.raw, _, _, _ = _receive(slot.conn)
        slot.frames = [_side_by_side(slot.obs, self.variant.camera_keys)] if slot.spec.record else None

    def merge_arrivals(self, slot: _Slot) -> None:
        due = [a for a in slot.arrivals if a[0] <= slot.scheduler.tick]
        slot.arrivals = [a for a in slot.arrivals if a[0] > slot.scheduler.tick]
        for _, request, chunk in due:
            slot.scheduler.receive(request, chunk, honours_prefix=self.s.honours_prefix)

    def request_chunks(self, active: list[_Slot]) -> None:
        asks = [(s, s.scheduler.request(self.s.delay_steps)) for s in active]
        asks = [(s, r) for s, r in asks if r is not None]
        # Robots with a committed prefix (rtc) and without one are separate calls: the plain call stays
        # exactly the sampler without constraint.
        for group in ([a for a in asks if a[1].prefix is None], [a for a in asks if a[1].prefix is not None]):
            if group:
                self.predict(group)

    def predict(self, group: list[tuple[_Slot, ChunkRequest]]) -> None:
        slots = [s for s, _ in group]
        requests = [r for _, r in group]
        t0 = time.perf_counter()
        seeds = [chunk_seed(self.s.noise_seed, s.spec.seed, r.number) for s, r in group]
        constraint = None
        if requests[0].prefix is not None and self.s.honours_prefix:
            constraint = _prefix_kwargs(requests, self.s.execution.guidance)
        batch = _batch(slots, self.s.domain_id, self.s.env_state, self.s.key_map)
        chunks = _predict(self.policy, batch, seeds, self.s.denoising_steps, constraint)
        self.timings["policy_s"] += time.perf_counter() - t0
        self.timings["chunks"] += 1
        for s, r, c in zip(slots, requests, chunks, strict=True):
            actions = chunk_to_control_rate(c, self.variant.fps, self.s.action_horizon_s)
            if self.s.delay_steps == 0:
                s.scheduler.receive(r, actions, honours_prefix=self.s.honours_prefix)
            else:
                s.arrivals.append((r.tick + self.s.delay_steps, r, actions))

    def step_envs(self, active: list[_Slot]) -> list[_Slot]:
        t0 = time.perf_counter()
        for s in active:
            action = s.scheduler.next_action().action
            s.env_actions.append(self.variant.action.to_env(action))
            s.conn.send(("step", action))
        finished = []
        for s in active:
            _, s.obs, s.raw, reward, terminated, truncated = _receive(s.conn)
            s.length += 1
            s.reward += reward
            if s.frames is not None:
                s.frames.append(_side_by_side(s.obs, self.variant.camera_keys))
            if terminated or truncated or s.length >= self.s.max_steps:
                self.finish(s, bool(terminated))
                finished.append(s)
        self.timings["env_s"] += time.perf_counter() - t0
        self.timings["env_steps"] += len(active)
        return finished

    def finish(self, s: _Slot, success: bool) -> None:
        trace = s.scheduler.trace
        motion = motion_metrics(
            np.stack(s.env_actions)[:, :3], [r.idle for r in trace], [r.switch for r in trace]
        )
        self.results[s.number] = EpisodeResult(
            s.spec.task,
            s.spec.index,
            s.spec.seed,
            success,
            s.length,
            s.reward,
            s.frames,
            np.asarray(s.obs["observation.state"]).copy(),
            motion,
        )
        self.successes += success
