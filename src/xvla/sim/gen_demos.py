"""Scripted demonstrations -> LeRobot v3.0 datasets, one per embodiment variant.

Meta-World ships a scripted expert for each of its 50 tasks. For every (variant, task) we run the
expert on layouts 0, 1, 2, ... of a base seed (``episode_seed(seed, task, i)``) and keep the episodes
that succeed, until each task has ``episodes_per_task`` of them or ``max_attempts_factor`` times
as many attempts have been made. Episodes run in worker processes; the main process writes them in
a fixed order (variant, task, layout), so the datasets do not depend on the number of workers.

A frame is (observation at step t, the variant's action at step t): the variant's transform of the
expert's 4-D action (``ActionTransform.from_env``). The episode ends at the step that succeeds.
Each dataset's ``meta/xvla_sim.json`` records the variant (cameras, action transform, control
rate, domain id), the tasks and their instructions, the seeds and the expert's success rate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..domains import DATASET_DOMAIN_FILE
from ..utils import write_json
from .instructions import instruction, resolve_tasks
from .variants import EmbodimentVariant, resolve_variants

logger = logging.getLogger(__name__)

SIM_META_FILE = DATASET_DOMAIN_FILE
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_opening"]
PRIVILEGED_NAMES = STATE_NAMES + [f"object_{i}" for i in range(14)] + ["goal_x", "goal_y", "goal_z"]


@dataclass
class DemoConfig:
    output: str = field(
        default="outputs/demos", metadata={"help": "folder for the datasets (one per variant)"}
    )
    tasks: str | list[str] = field(
        default="mt10", metadata={"help": "task set (mt10, mt50, easy) or comma-separated names"}
    )
    variants: str | list[EmbodimentVariant] = field(
        default="sawyer", metadata={"help": "comma-separated variant names or JSON files, or 'all'"}
    )
    episodes_per_task: int = field(
        default=10, metadata={"help": "successful demonstrations kept per task and variant"}
    )
    seed: int = field(default=0, metadata={"help": "base seed of the layouts"})
    workers: int = field(default=2, metadata={"help": "parallel simulator processes"})
    max_steps: int = field(default=200, metadata={"help": "actions per episode before an episode is dropped"})
    image_size: int | tuple[int, int] | None = field(
        default=None, metadata={"help": "camera size (default: the variant's)"}
    )
    max_attempts_factor: float = field(
        default=3.0, metadata={"help": "at most this many attempts per kept episode"}
    )
    privileged_state: bool = field(
        default=False, metadata={"help": "append object and goal positions to the state"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace existing datasets"})
    start_method: str | None = None  # multiprocessing start method (default: fork where available)
    progress: bool = field(default=True, metadata={"help": "progress bar"})

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = resolve_tasks(self.tasks)
        if isinstance(self.variants, (str, EmbodimentVariant)):
            self.variants = (
                resolve_variants(self.variants) if isinstance(self.variants, str) else [self.variants]
            )
        self.variants = [v.with_image_size(self.image_size) for v in self.variants]
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task={self.episodes_per_task} must be >= 1")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1")
        if self.workers < 1:
            raise ValueError(f"workers={self.workers} must be >= 1")
        if self.max_attempts_factor < 1:
            raise ValueError(f"max_attempts_factor={self.max_attempts_factor} must be >= 1")

    def dataset_dir(self, variant: EmbodimentVariant) -> Path:
        return Path(self.output) / variant.name


# ---------------------------------------------------------------------------------------------- workers
_ENV_CACHE: OrderedDict = OrderedDict()
_ENV_CACHE_SIZE = 4


def _cached_env(task: str, variant: EmbodimentVariant, max_steps: int, privileged: bool):
    from .metaworld_env import MetaWorldEnv

    key = (task, json.dumps(variant.to_dict(), sort_keys=True), privileged)
    env = _ENV_CACHE.pop(key, None)
    if env is None:
        env = MetaWorldEnv(task, variant, privileged_state=privileged, max_episode_steps=max_steps)
    env.max_episode_steps = max_steps
    _ENV_CACHE[key] = env
    while len(_ENV_CACHE) > _ENV_CACHE_SIZE:
        _, old = _ENV_CACHE.popitem(last=False)
        old.close()
    return env


def close_cached_envs() -> None:
    while _ENV_CACHE:
        _, env = _ENV_CACHE.popitem()
        env.close()


def run_expert_episode(job: tuple) -> dict[str, Any]:
    """Run the scripted expert once; frames come back only for a successful episode."""
    from .metaworld_env import episode_seed

    variant_dict, task, index, seed, max_steps, privileged = job
    variant = EmbodimentVariant.from_dict(variant_dict)
    env = _cached_env(task, variant, max_steps, privileged)
    layout_seed = episode_seed(seed, task, index)
    obs, _ = env.reset(seed=layout_seed)
    frames: dict[str, list] = {k: [] for k in obs}
    actions = []
    success = False
    for _ in range(max_steps):
        action = env.expert_action()
        for key, value in obs.items():
            frames[key].append(value)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated:
            success = True
            break
        if truncated:
            break
    result = {"task": task, "index": index, "seed": layout_seed, "length": len(actions), "success": success}
    if success:
        result["frames"] = {k: np.stack(v) for k, v in frames.items()}
        result["action"] = np.stack(actions).astype(np.float32)
    return result


def _worker_init() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:  # keep each worker on one core's worth of threads
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def mp_context(start_method: str | None = None):
    """The multiprocessing context for simulator workers.

    Default: "fork" (workers start at once) unless this process has opened an OpenGL context
    (forked renderers hang then), else "forkserver" with this package preloaded in the server, or
    "spawn" where neither exists.
    """
    import multiprocessing as mp
    import sys

    methods = mp.get_all_start_methods()
    if start_method is None:
        sim_env = sys.modules.get("xvla.sim.metaworld_env")
        rendered_here = sim_env is not None and sim_env.gl_context_opened()
        if "fork" in methods and not rendered_here:
            start_method = "fork"
        elif "forkserver" in methods:
            start_method = "forkserver"
        else:
            start_method = "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(["xvla.sim.gen_demos", "xvla.sim.rollout"])
    return ctx


class _InlinePool:
    """The pool interface, run in this process (workers=1): easier to debug and to test."""

    def imap(self, fn, jobs, chunksize: int = 1):
        return map(fn, jobs)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        close_cached_envs()


def make_pool(workers: int, start_method: str | None = None):
    if workers <= 1:
        return _InlinePool()
    return mp_context(start_method).Pool(workers, initializer=_worker_init, maxtasksperchild=None)


def progress_bar(total: int, desc: str, enabled: bool = True):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the train and sim extras
        tqdm = None
    if tqdm is None or not enabled:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="ep", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- datasets
def dataset_features(variant: EmbodimentVariant, privileged: bool = False) -> dict[str, dict]:
    height, width = variant.image_size
    features: dict[str, dict] = {
        key: {"dtype": "video", "shape": (height, width, 3), "names": ["height", "width", "channels"]}
        for key in variant.camera_keys
    }
    names = PRIVILEGED_NAMES if privileged else STATE_NAMES
    features["observation.state"] = {"dtype": "float32", "shape": (len(names),), "names": names}
    features["action"] = {"dtype": "float32", "shape": (variant.action_dim,), "names": variant.action.names()}
    return features


def generate_demonstrations(config: DemoConfig) -> dict[str, Any]:
    """Write one dataset per variant under ``config.output``; return a summary (also saved as summary.json)."""
    start = time.perf_counter()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    run = _Collection(config)
    try:
        with make_pool(config.workers, config.start_method) as pool:
            while jobs := run.next_jobs():
                for job, result in zip(jobs, pool.imap(_run_job, jobs, chunksize=1), strict=True):
                    run.add(job, result)
    finally:
        run.close()
    summary = _summarize(config, run.records, run.attempts, run.needed, time.perf_counter() - start)
    for v in config.variants:
        _write_sim_meta(config, v, run.records[v.name], run.attempts, summary)
    write_json((out / "summary.json"), summary)
    short = [f"{k[0]}/{k[1]}: {n} missing" for k, n in run.needed.items() if n > 0]
    if short:
        logger.warning("some tasks have fewer successful episodes than asked for: %s", "; ".join(short))
    return summary


class _Collection:
    """One ``gen-demos`` run's bookkeeping: a dataset writer per variant, the episodes each (variant, task)
    still needs, the layouts tried so far and the episodes kept."""

    def __init__(self, config: DemoConfig):
        from ..data import LeRobotDatasetWriter

        self.config = config
        self.writers = {
            v.name: LeRobotDatasetWriter.create(
                config.dataset_dir(v),
                fps=v.fps,
                features=dataset_features(v, config.privileged_state),
                robot_type=f"metaworld-{v.name}",
                overwrite=config.overwrite,
            )
            for v in config.variants
        }
        self.by_name = {v.name: v for v in config.variants}
        self.needed = {(v.name, t): config.episodes_per_task for v in config.variants for t in config.tasks}
        self.next_index = dict.fromkeys(self.needed, 0)
        self.attempts = dict.fromkeys(self.needed, 0)
        self.budget = int(np.ceil(config.episodes_per_task * config.max_attempts_factor))
        self.records: dict[str, list[dict]] = {v.name: [] for v in config.variants}
        self.bar = progress_bar(sum(self.needed.values()), "demonstrations", config.progress)
        self.saved = self.tried = 0

    def next_jobs(self) -> list[tuple]:
        """The next layouts of every (variant, task) still short of episodes, within its attempt budget."""
        cfg, jobs = self.config, []
        for (vname, task), missing in self.needed.items():
            room = self.budget - self.attempts[(vname, task)]
            for _ in range(min(missing, room)):
                jobs.append(
                    (
                        self.by_name[vname].to_dict(),
                        task,
                        self.next_index[(vname, task)],
                        cfg.seed,
                        cfg.max_steps,
                        cfg.privileged_state,
                        vname,
                    )
                )
                self.next_index[(vname, task)] += 1
                self.attempts[(vname, task)] += 1
        return jobs

    def add(self, job: tuple, result: dict[str, Any]) -> None:
        """Write a successful episode to its variant's dataset; count a failed one as tried only."""
        vname, task = job[-1], job[1]
        self.tried += 1
        if not result["success"]:
            self.bar.set_postfix_str(f"kept {self.saved}/{self.tried} tried")
            return
        writer = self.writers[vname]
        _write_episode(writer, self.by_name[vname], result)
        self.records[vname].append(
            {
                "episode_index": writer.num_episodes - 1,
                "task": task,
                "layout_index": result["index"],
                "seed": result["seed"],
                "length": result["length"],
            }
        )
        self.needed[(vname, task)] -= 1
        self.saved += 1
        self.bar.update(1)
        self.bar.set_postfix_str(f"kept {self.saved}/{self.tried} tried")

    def close(self) -> None:
        self.bar.close()
        for writer in self.writers.values():
            writer.finalize()


def _run_job(job: tuple) -> dict[str, Any]:
    return run_expert_episode(job[:6])


def _write_episode(writer, variant: EmbodimentVariant, result: dict) -> None:
    frames = result["frames"]
    for t in range(result["length"]):
        frame = {key: frames[key][t] for key in frames}
        frame["action"] = result["action"][t]
        writer.add_frame(frame)
    writer.save_episode(task=instruction(result["task"]))


def _summarize(config: DemoConfig, records, attempts, needed, seconds: float) -> dict[str, Any]:
    per_variant = {}
    for v in config.variants:
        tasks = {}
        for task in config.tasks:
            eps = [r for r in records[v.name] if r["task"] == task]
            tried = attempts[(v.name, task)]
            tasks[task] = {
                "episodes": len(eps),
                "attempts": tried,
                "expert_success_rate": round(len(eps) / tried, 4) if tried else None,
                "mean_length": round(float(np.mean([r["length"] for r in eps])), 1) if eps else None,
            }
        per_variant[v.name] = {
            "dataset": str(config.dataset_dir(v)),
            "domain_id": v.domain_id,
            "episodes": len(records[v.name]),
            "frames": int(sum(r["length"] for r in records[v.name])),
            "tasks": tasks,
        }
    return {
        "seed": config.seed,
        "episodes_per_task": config.episodes_per_task,
        "max_steps": config.max_steps,
        "workers": config.workers,
        "seconds": round(seconds, 1),
        "variants": per_variant,
    }


def _write_sim_meta(config: DemoConfig, variant: EmbodimentVariant, records, attempts, summary) -> None:
    try:
        from importlib.metadata import version

        mw_version = version("metaworld")
    except Exception:  # noqa: BLE001 - informational only
        mw_version = None
    meta = {
        "simulator": "metaworld",
        "metaworld_version": mw_version,
        "variant": variant.to_dict(),
        "domain_id": variant.domain_id,
        "privileged_state": config.privileged_state,
        "seed": config.seed,
        "max_steps": config.max_steps,
        "instructions": {t: instruction(t) for t in config.tasks},
        "expert": summary["variants"][variant.name]["tasks"],
        "episodes": records,
    }
    path = config.dataset_dir(variant) / SIM_META_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, meta)


def read_sim_meta(dataset_root: str | Path) -> dict[str, Any] | None:
    """The ``meta/xvla_sim.json`` of a dataset made by ``generate_demonstrations`` (None for other datasets)."""
    path = Path(dataset_root) / SIM_META_FILE
    return json.loads(path.read_text()) if path.is_file() else None
