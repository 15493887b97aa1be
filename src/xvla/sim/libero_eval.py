"""``xvla eval --env libero``: a checkpoint on a LIBERO suite under the official X-VLA protocol.

    cfg = LiberoEvalConfig(policy="2toINF/X-VLA-Libero", suite="libero_spatial", num_envs=8, device="cuda")
    report = evaluate_libero(cfg)         # results.json, results.md, episodes.jsonl, videos/*.mp4

Protocol defaults (``docs/libero.md`` says why): 50 episodes per task (init states 0-49, env seed
142 + episode), 10 settle steps then absolute OSC_POSE control, all 30 actions of a chunk executed
before the next query, the suite's step limit (800; libero_10 900), stop at the first success,
open-loop state, domain id 3.

Simulators run in worker processes (``num_envs``; one in this process when ``num_envs=1``). Each
worker executes a whole chunk per message and renders cameras only when the policy or a video
needs them. Every finished episode is appended to ``episodes.jsonl`` at once, so a killed run
started again with the same settings continues where it stopped; the results do not depend on
where it stopped, because every episode's flow-matching noise comes from (seed, task, episode,
chunk) and its scene from (task, episode).

``policy_url`` drives a running ``xvla serve`` through its official ``POST /act`` endpoint instead of
an in-process policy (the noise travels with each request, so the numbers are the same).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..execution.sources import noise_shape
from ..serve.client import RemotePolicy
from .libero import (
    IMAGE_KEY,
    MAX_STEPS,
    STATE_SOURCES,
    WRIST_KEY,
    check_suite,
)
from .workers import WorkerPool, receive

logger = logging.getLogger(__name__)

RESULTS_FILE, EPISODES_FILE, SETTINGS_FILE = "results.json", "episodes.jsonl", "settings.json"
VIDEO_FPS = 20  # LIBERO's control frequency: videos play in real time
# Settings that change the outcome of an episode: a resumed run must match them.
PROTOCOL_FIELDS = ("policy", "policy_url", "suite", "max_steps", "state_source", "seed", "domain_id",
                   "n_action_steps", "denoising_steps", "settle_steps", "camera_size")  # fmt: skip


@dataclass
class LiberoEvalConfig:
    policy: str | None = field(default=None, metadata={"help": "checkpoint folder or Hub id (in-process policy)"})
    policy_url: str | None = field(default=None, metadata={"help": "or the URL of a running `xvla serve` (POST /act)"})
    suite: str = field(default="libero_spatial", metadata={"help": "libero_spatial, libero_object, libero_goal or libero_10"})
    tasks: list[int] | None = field(default=None, metadata={"help": "task ids, comma-separated (default: every task of the suite)"})
    episodes_per_task: int = field(default=50, metadata={"help": "episodes per task (the protocol's 50)"})
    num_envs: int = field(default=4, metadata={"help": "parallel simulator processes"})
    max_steps: int | None = field(default=None, metadata={"help": "actions per episode (default: the suite's, 800; libero_10 900)"})
    state_source: str = field(default="open_loop", metadata={"help": "open_loop (the previous chunk's last action after the first query) or measured; see docs/libero.md"})
    seed: int = field(default=0, metadata={"help": "flow-matching noise; scenes follow the protocol (init state i, env seed 142 + i)"})
    domain_id: int | None = field(default=None, metadata={"help": "default: the checkpoint's LIBERO domain if its table names one, else 3"})
    n_action_steps: int | None = field(default=None, metadata={"help": "actions executed per chunk (default: the whole chunk, 30 for the released checkpoints)"})
    denoising_steps: int | None = field(default=None, metadata={"help": "default: the policy's (10 for the released checkpoints)"})
    settle_steps: int = field(default=10, metadata={"help": "no-op steps after a reset while objects settle"})
    camera_size: int = field(default=256, metadata={"help": "render size in pixels"})
    videos: int = field(default=3, metadata={"help": "episodes saved as mp4 (episode 0 of the first tasks)"})
    output: str = field(default="outputs/libero", metadata={"help": "results folder (resumed if it holds a run)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    fast: bool = field(default=False, metadata={"help": "the fastest correct setting for this machine (`xvla info --hardware`)"})
    overwrite: bool = field(default=False, metadata={"help": "start again instead of resuming"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    start_method: str = field(default="spawn", metadata={"help": "multiprocessing start method: workers never inherit this process's torch threads or GL state"})

    def __post_init__(self) -> None:
        check_suite(self.suite)
        if self.policy is not None and self.policy_url is not None:
            raise ValueError("give one of policy (a checkpoint path or Hub id) and policy_url (a running server), not both")
        if self.state_source not in STATE_SOURCES:
            raise ValueError(f"state_source={self.state_source!r}: choose 'open_loop' (official) or 'measured' (LeRobot)")
        for name in ("episodes_per_task", "num_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be >= 1 (or None: the whole chunk)")
        if self.max_steps is None:
            self.max_steps = MAX_STEPS[self.suite]
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1")


@dataclass
class EpisodeSpec:
    task_id: int
    episode: int
    record: bool = False


# ---------------------------------------------------------------------------------------------- workers
class SimWorker:
    """Runs LIBERO episodes on command; one per process (or this process). Messages and replies are tuples."""

    def __init__(self, suite: str, state_source: str, max_steps: int, settle_steps: int, camera_size: int,
                 video_dir: str | None):  # fmt: skip
        self.kwargs = dict(state_source=state_source, max_episode_steps=max_steps, settle_steps=settle_steps,
                           camera_size=camera_size, render_images=False)  # fmt: skip
        self.suite, self.video_dir = suite, video_dir
        self.env = None
        self.encoder = None

    def handle(self, message: tuple) -> tuple:
        if message[0] == "reset":
            return self.reset(*message[1:])
        if message[0] == "chunk":
            return self.run_chunk(message[1])
        raise ValueError(f"unknown command {message[0]!r}")

    def reset(self, task_id: int, episode: int, record: bool) -> tuple:
        from .libero import LiberoEnv

        if self.env is None or self.env.task_id != task_id:
            self.close()
            self.env = LiberoEnv(self.suite, task_id, **self.kwargs)
        self.env.reset(options={"episode": episode})
        self._finish_video()
        if record and self.video_dir:
            self._start_video(task_id, episode)
        obs = self.env.observe(images=True)
        if self.encoder is not None:
            self._frame(obs)
        return ("ok", obs, False, False, 0)

    def run_chunk(self, rows: np.ndarray) -> tuple:
        """Execute every row (stopping at success or the step limit); reply with the next query's observation."""
        env, recording = self.env, self.encoder is not None
        success = truncated = False
        env.render_images = recording  # every frame of a recorded episode; otherwise none until the query
        try:
            for row in rows:
                obs, _, success, truncated, _ = env.step(row)
                if recording:
                    self._frame(obs)
                if success or truncated:
                    self._finish_video()
                    return ("ok", obs, success, truncated, env.elapsed_steps)
        finally:
            env.render_images = False
        return ("ok", obs if recording else env.observe(images=True), False, False, env.elapsed_steps)

    def _start_video(self, task_id: int, episode: int) -> None:
        from ..data.video import VideoEncoder

        path = Path(self.video_dir) / f"task{task_id:02d}_ep{episode:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.encoder = VideoEncoder(path, fps=VIDEO_FPS, crf=20, gop=None, name=path.stem)

    def _frame(self, obs: dict) -> None:
        self.encoder.add(video_frame(obs))

    def _finish_video(self) -> None:
        if self.encoder is not None:
            self.encoder.close()
            self.encoder = None

    def close(self) -> None:
        self._finish_video()
        if self.env is not None:
            self.env.close()
            self.env = None


def video_frame(obs: dict) -> np.ndarray:
    """Agentview and wrist side by side, both upright and unmirrored (as a person would film the scene).

    The model sees the agentview turned 180 degrees (upright but mirrored) and the wrist frame as
    rendered (OpenGL rows, bottom first); one vertical flip of the rendered frames shows both as seen.
    """
    agent = obs[IMAGE_KEY][:, ::-1]  # = rendered[::-1]
    wrist = obs[WRIST_KEY][::-1]
    return np.ascontiguousarray(np.concatenate([agent, wrist], axis=1))


def _receive(conn) -> tuple:
    return receive(conn, "LIBERO")


# ---------------------------------------------------------------------------------------------- policies
def noise_seed(seed: int, task_id: int, episode: int, chunk: int) -> int:
    """The flow-matching noise seed of one chunk: independent of batching, workers and restarts."""
    return int(np.random.SeedSequence([int(seed), int(task_id), int(episode), int(chunk)]).generate_state(1)[0])


def chunk_noise(seeds: list[int], chunk_size: int, action_dim: int) -> np.ndarray:
    import torch

    noise = [torch.randn((chunk_size, action_dim), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise).numpy()


NO_POLICY = "no policy: give --policy.path (a checkpoint folder or Hub id) or --policy.url (a running `xvla serve`)"


def load_policy(cfg: LiberoEvalConfig) -> Any:
    if cfg.policy is None and cfg.policy_url is None:
        raise ValueError(NO_POLICY)
    if cfg.policy_url is not None:  # the official /act: any X-VLA server, whatever it names its cameras
        return RemotePolicy(cfg.policy_url, cameras=(IMAGE_KEY, WRIST_KEY))
    from ..policy import XVLAPolicy

    return XVLAPolicy.from_pretrained(cfg.policy, device=cfg.device, fast=cfg.fast)


def policy_description(policy: Any) -> str:
    """Text that says what a policy was trained on (its config), for the domain-id check."""
    if isinstance(policy, RemotePolicy):
        return json.dumps(policy.info.get("checkpoint", "")) + json.dumps(policy.info)
    parts = [repr(getattr(policy, "config", ""))]
    source = getattr(policy, "source_dir", None)
    if source is not None:  # a Hub download's folder names the repository (e.g. X-VLA-Libero)
        parts.append(str(source))
        if (Path(source) / "config.json").exists():
            parts.append((Path(source) / "config.json").read_text())
    return " ".join(parts)


class DomainIdWarning(UserWarning):
    """A domain id that does not match what the checkpoint was trained with."""


def check_domain_id(domain_id: int, description: str, expected: int = 3) -> str | None:
    """A warning when a LIBERO-trained checkpoint runs with another domain id than its LIBERO one (3 for
    the released checkpoints)."""
    from ..domains import released_domain_name

    if domain_id == expected or "libero" not in description.lower():
        return None
    name = released_domain_name(domain_id) or "unused by the released base"
    message = (f"domain_id={domain_id} ({name}) on a checkpoint whose name or config mentions LIBERO: it was "
               f"trained with domain id {expected} for LIBERO (the released base's table: 3); pass --domain-id "
               f"{expected} unless you fine-tuned on another id")  # fmt: skip
    warnings.warn(message, DomainIdWarning, stacklevel=2)
    return message


def predict(policy: Any, batch: dict, seeds: list[int], steps: int | None) -> np.ndarray:
    kwargs: dict[str, Any] = {}
    shape = noise_shape(policy)
    if shape is not None:
        noise = chunk_noise(seeds, *shape)
        if isinstance(policy, RemotePolicy):
            kwargs["noise"] = noise
        else:
            import torch

            kwargs["noise"] = torch.from_numpy(noise).to(getattr(policy, "device", "cpu"))
        if steps is not None:
            kwargs["steps"] = steps
    chunk = policy.predict_action_chunk(batch, **kwargs)
    if hasattr(chunk, "detach"):
        chunk = chunk.detach().float().cpu().numpy()
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 3 or chunk.shape[0] != len(seeds) or chunk.shape[-1] < 10:
        raise ValueError(
            f"predict_action_chunk returned shape {chunk.shape}; LIBERO needs [{len(seeds)}, T, >=10] ee6d actions "
            "(xyz, rot6d, gripper): is this an ee6d checkpoint (action_mode='ee6d')?"
        )
    return chunk


# ---------------------------------------------------------------------------------------------- results
class EpisodeStore:
    """``episodes.jsonl`` in the output folder: one line per finished episode, appended and synced at once."""

    def __init__(self, cfg: LiberoEvalConfig):
        self.folder = Path(cfg.output)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / EPISODES_FILE
        settings = {k: getattr(cfg, k) for k in PROTOCOL_FIELDS}
        settings_path = self.folder / SETTINGS_FILE
        if cfg.overwrite:
            for name in (EPISODES_FILE, RESULTS_FILE, SETTINGS_FILE, "results.md"):
                (self.folder / name).unlink(missing_ok=True)
        elif settings_path.exists():
            old = json.loads(settings_path.read_text())
            changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if changed:
                raise ValueError(
                    f"{self.folder} holds a run with other settings {changed} (old, new): resume with the same "
                    "settings, or pass --overwrite / another --output"
                )
        settings_path.write_text(json.dumps(settings, indent=2))
        self.records = self._read()

    def _read(self) -> dict[tuple[int, int], dict]:
        if not self.path.exists():
            return {}
        records, good = {}, 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line cut by a kill: dropped, the episode runs again
                rec = json.loads(line)
                records[(rec["task_id"], rec["episode"])] = rec
                good += len(line)
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good)
        return records

    def add(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[(record["task_id"], record["episode"])] = record


def episode_specs(task_ids: list[int], episodes_per_task: int, videos: int) -> list[EpisodeSpec]:
    """Task by task; episode 0 of the first ``videos`` tasks (then episode 1, ...) is recorded."""
    recorded = {(t, e) for e in range(episodes_per_task) for t in task_ids}
    recorded = set(sorted(recorded, key=lambda te: (te[1], task_ids.index(te[0])))[:videos])
    return [EpisodeSpec(t, e, (t, e) in recorded) for t in task_ids for e in range(episodes_per_task)]


def summarize(records: list[dict], task_ids: list[int], instructions: list[str]) -> dict[str, Any]:
    per_task = {}
    for t in task_ids:
        stats = _stats([r for r in records if r["task_id"] == t])
        per_task[str(t)] = {"instruction": instructions[t], **stats}
    overall = _stats(records)
    overall["mean_task_success_rate"] = float(np.mean([per_task[str(t)]["success_rate"] for t in task_ids]))
    return {"per_task": per_task, "overall": overall}


def _stats(records: list[dict]) -> dict[str, Any]:
    from .evaluate import wilson_interval

    n = len(records)
    k = sum(bool(r["success"]) for r in records)
    lo, hi = wilson_interval(k, n)
    ok = [r["length"] for r in records if r["success"]]
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "mean_length": float(np.mean([r["length"] for r in records])) if records else None,
        "mean_length_success": float(np.mean(ok)) if ok else None,
    }


def markdown_table(report: dict[str, Any]) -> str:
    s = report["settings"]
    who = s["policy"] or s["policy_url"] or "a policy object"
    lines = [
        f"# LIBERO `{s['suite']}`: {who}",
        "",
        f"{s['episodes_per_task']} episodes per task (init states 0-{s['episodes_per_task'] - 1}, env seed 142 + "
        f"episode), at most {s['max_steps']} steps, state `{s['state_source']}`, domain {s['domain_id']}; success "
        "with a 95% Wilson interval.",
        "",
        "| task | instruction | success | 95% CI | mean length | mean length (success) |",
        "|---|---|---|---|---|---|",
    ]
    for task_id, st in report["per_task"].items():
        lines.append(_row(task_id, st["instruction"], st))
    lines.append(_row("**all**", "", report["overall"]))
    if report.get("videos"):
        lines += ["", "Videos: " + ", ".join(f"[{Path(v).name}]({v})" for v in report["videos"])]
    return "\n".join(lines) + "\n"


def _row(name: str, instruction: str, st: dict) -> str:
    lo, hi = st["ci95"]
    ml = f"{st['mean_length']:.1f}" if st["mean_length"] is not None else "-"
    mls = f"{st['mean_length_success']:.1f}" if st["mean_length_success"] is not None else "-"
    return (f"| {name} | {instruction} | {st['successes']}/{st['episodes']} ({100 * st['success_rate']:.1f}%) | "
            f"{100 * lo:.1f}-{100 * hi:.1f}% | {ml} | {mls} |")  # fmt: skip


# ---------------------------------------------------------------------------------------------- main loop
@dataclass
class _Slot:
    conn: Any
    spec: EpisodeSpec | None = None
    obs: dict | None = None
    chunks: int = 0


def _batch(slots: list[_Slot], instructions: list[str], domain_id: int) -> dict[str, Any]:
    return {
        IMAGE_KEY: np.stack([s.obs[IMAGE_KEY] for s in slots]),
        WRIST_KEY: np.stack([s.obs[WRIST_KEY] for s in slots]),
        "observation.state": np.stack([s.obs["observation.state"] for s in slots]),
        "task": [instructions[s.spec.task_id] for s in slots],
        "domain_id": int(domain_id),
    }


def run_episodes(policy: Any, specs: list[EpisodeSpec], cfg: LiberoEvalConfig, instructions: list[str],
                 store: EpisodeStore, bar: Any) -> dict[str, float]:  # fmt: skip
    """Run ``specs`` in ``cfg.num_envs`` simulators, storing each result as it finishes; return timings."""
    from collections import deque

    pending = deque(specs)
    timing = {"policy_s": 0.0, "env_s": 0.0, "chunks": 0, "env_steps": 0}
    worker_kwargs = dict(suite=cfg.suite, state_source=cfg.state_source, max_steps=cfg.max_steps,
                         settle_steps=cfg.settle_steps, camera_size=cfg.camera_size,
                         video_dir=str(Path(cfg.output) / "videos"))  # fmt: skip
    import multiprocessing as mp

    context = mp.get_context(cfg.start_method)
    with WorkerPool(min(cfg.num_envs, len(specs)), SimWorker, worker_kwargs, context=context) as pool:
        slots = [_Slot(conn) for conn in pool.conns]
        _start(slots, pending)
        while any(s.spec is not None for s in slots):
            active = [s for s in slots if s.spec is not None]
            t0 = time.perf_counter()
            seeds = [noise_seed(cfg.seed, s.spec.task_id, s.spec.episode, s.chunks) for s in active]
            chunk = predict(policy, _batch(active, instructions, cfg.domain_id), seeds, cfg.denoising_steps)
            timing["policy_s"] += time.perf_counter() - t0
            timing["chunks"] += 1
            t0 = time.perf_counter()
            for s, rows in zip(active, chunk, strict=True):
                s.conn.send(("chunk", rows[: cfg.n_action_steps or len(rows)]))
                s.chunks += 1
            finished = []
            for s in active:
                _, s.obs, success, truncated, length = _receive(s.conn)
                if success or truncated:
                    _finish(s, success, length, store, bar, timing)
                    finished.append(s)
            timing["env_s"] += time.perf_counter() - t0
            _start(finished, pending)
    return timing


def _start(slots: list[_Slot], pending) -> None:
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
        slot.obs = _receive(slot.conn)[1]


def _finish(slot: _Slot, success: bool, length: int, store: EpisodeStore, bar: Any, timing: dict) -> None:
    spec = slot.spec
    video = f"videos/task{spec.task_id:02d}_ep{spec.episode:03d}.mp4" if spec.record else None
    # The final state makes runs comparable beyond success (resume, server vs in-process).
    final = [round(float(v), 6) for v in slot.obs["observation.state"][:9]]
    store.add({"task_id": spec.task_id, "episode": spec.episode, "success": bool(success), "length": int(length),
               "chunks": slot.chunks, "final_state": final, "video": video})  # fmt: skip
    timing["env_steps"] += int(length)
    done = list(store.records.values())
    wins = sum(r["success"] for r in done)
    bar.update(1)
    bar.set_postfix_str(f"success {wins}/{len(done)} ({100 * wins / len(done):.1f}%)")


def evaluate_libero(cfg: LiberoEvalConfig, policy: Any = None) -> dict[str, Any]:
    """Run (or resume) the evaluation and write results.json / results.md; ``policy`` overrides loading one."""
    from .libero import suite_tasks

    start = time.perf_counter()
    instructions = suite_tasks(cfg.suite)
    task_ids = _task_ids(cfg.tasks, len(instructions), cfg.suite)
    own_policy = policy is None
    policy = load_policy(cfg) if own_policy else policy
    try:
        expected = libero_domain(policy, None)
        cfg = replace(cfg, domain_id=libero_domain(policy, cfg.domain_id))
        domain_warning = check_domain_id(cfg.domain_id, f"{cfg.policy or ''} {policy_description(policy)}", expected)
        store = EpisodeStore(cfg)
        specs = episode_specs(task_ids, cfg.episodes_per_task, cfg.videos)
        timing, ran = _run_missing(policy, specs, cfg, instructions, store)
    finally:
        if own_policy and hasattr(policy, "close"):
            policy.close()
    records = [store.records[(s.task_id, s.episode)] for s in specs]
    report = _report(cfg, records, task_ids, instructions, timing, time.perf_counter() - start, ran)
    report["warnings"] = [domain_warning] if domain_warning else []
    out = Path(cfg.output)
    (out / RESULTS_FILE).write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown_table(report))
    return report


def _run_missing(policy: Any, specs: list[EpisodeSpec], cfg: LiberoEvalConfig, instructions: list[str],
                 store: EpisodeStore) -> tuple[dict[str, float], int]:  # fmt: skip
    """The episodes not in the store yet, with a progress bar that counts the stored ones as done."""
    from .gen_demos import progress_bar

    todo = [s for s in specs if (s.task_id, s.episode) not in store.records]
    timing: dict[str, float] = {"policy_s": 0.0, "env_s": 0.0, "chunks": 0, "env_steps": 0}
    bar = progress_bar(len(specs), f"LIBERO {cfg.suite}", cfg.progress)
    bar.update(len(specs) - len(todo))
    try:
        if todo:
            if hasattr(policy, "eval"):
                policy.eval()
            timing = run_episodes(policy, todo, cfg, instructions, store, bar)
    finally:
        bar.close()
    return timing, len(todo)


def libero_domain(policy: Any, explicit: int | None) -> int:
    """The domain id to run: ``explicit`` if given, else the id the checkpoint's domain table gives LIBERO,
    else 3 (``libero`` in the released base's table)."""
    from ..domains import LIBERO_DOMAIN_ID

    if explicit is not None:
        return int(explicit)
    table = getattr(getattr(policy, "config", None), "domains", None) or {}
    named = [int(d) for d, name in table.items() if "libero" in str(name).lower()]
    return named[0] if named else LIBERO_DOMAIN_ID


def _task_ids(tasks: list[int] | None, n_tasks: int, suite: str) -> list[int]:
    ids = list(range(n_tasks)) if tasks is None else [int(t) for t in tasks]
    bad = [t for t in ids if not 0 <= t < n_tasks]
    if bad:
        raise ValueError(f"task ids {bad} are out of range: {suite} has tasks 0-{n_tasks - 1}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"task ids {ids} repeat a task")
    return ids


def _report(cfg: LiberoEvalConfig, records: list[dict], task_ids: list[int], instructions: list[str],
            timing: dict, wall_s: float, ran: int) -> dict[str, Any]:  # fmt: skip
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "overwrite")}
    settings["tasks"] = task_ids
    steps = max(int(timing["env_steps"]), 1)
    return {
        "settings": settings,
        **summarize(records, task_ids, instructions),
        "episodes": records,
        "videos": [r["video"] for r in records if r.get("video")],
        "timing": {
            "wall_s": round(wall_s, 2),
            "episodes_run": ran,
            "policy_s": round(timing["policy_s"], 2),
            "env_s": round(timing["env_s"], 2),
            "policy_calls": int(timing["chunks"]),
            "env_steps": int(timing["env_steps"]),
            "s_per_env_step": round(timing["env_s"] / steps, 4) if timing["env_steps"] else None,
        },
    }


# ---------------------------------------------------------------------------------------------- CLI
# Flags of `xvla eval` that only Meta-World understands: an error with --env libero, not silently ignored.
METAWORLD_ONLY = ("variant", "image_size", "key_map", "privileged_state", "action_horizon_s", "execution", "delay_steps",
                  "dtype", "compile")


def config_from_args(args) -> LiberoEvalConfig:
    """The LIBERO config from ``xvla eval`` flags: the flags given, LIBERO's defaults for the rest."""
    from dataclasses import fields

    from ..flags import from_dict

    given = vars(args)
    wrong = [f"--{k.replace('_', '-')}" for k in METAWORLD_ONLY if k in given]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: Meta-World flag(s), not used by --env libero; drop them")
    values = {f.name: given[f.name] for f in fields(LiberoEvalConfig) if f.name in given}
    path = given.get("policy")
    if path is None and given.get("policy_url") is None:
        raise ValueError(NO_POLICY)
    values["policy"] = None if given.get("policy_url") else path
    if "tasks" in values:
        values["tasks"] = parse_task_ids(values["tasks"])
    values.setdefault("output", f"outputs/libero/{values.get('suite', 'libero_spatial')}")
    return from_dict(LiberoEvalConfig, values)


def parse_task_ids(text: Any) -> list[int] | None:
    """``"0,3"`` / ``"3"`` / ``"all"`` (or a list) -> task ids; None means every task."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "all"):
        return None
    items = text if isinstance(text, (list, tuple)) else str(text).replace(" ", "").split(",")
    try:
        return [int(t) for t in items if str(t) != ""]
    except ValueError:
        raise ValueError(f"--tasks {text!r}: give LIBERO task ids like 0,3 (or 'all')") from None


def cli_main(args) -> int:
    """``xvla eval --env libero ...``: run, print the markdown table, say where the files are."""
    cfg = config_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainIdWarning)  # printed below, after the table
        report = evaluate_libero(cfg)
    print(markdown_table(report))
    for message in report["warnings"]:
        print(f"warning: {message}")
    if getattr(args, "json", False):
        print(json.dumps(report["overall"], indent=2))
    print(f"results: {cfg.output}/{RESULTS_FILE}, {cfg.output}/results.md, {cfg.output}/{EPISODES_FILE}")
    return 0
