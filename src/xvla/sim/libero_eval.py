"""``xvla eval --env libero``: a checkpoint on a LIBERO suite under the official X-VLA protocol.

    cfg = LiberoEvalConfig(policy="2toINF/X-VLA-Libero", suite="libero_spatial", num_envs=8, device="cuda")
    report = evaluate_libero(cfg)         # results.json, results.md, episodes.jsonl, videos/*.mp4

Protocol defaults (``docs/libero.md`` says why): 50 episodes per task (init states 0-49, env seed
142 + episode), 10 settle steps then absolute OSC_POSE control, all 30 actions of a chunk executed
before the next query, the suite's step limit (800; libero_10 900), stop at the first success,
open-loop state, domain id 3.

This module holds the settings, the choice of policy and domain id, and the report. Simulators run in
worker processes (``num_envs``; one in this process when ``num_envs=1``), scheduled by
:mod:`~xvla.sim.libero_pool`. Every finished episode goes to an :class:`~xvla.sim.episode_store.EpisodeStore`
at once, so a killed run started again with the same settings continues where it stopped; the results do
not depend on where it stopped, because every episode's flow-matching noise comes from (seed, task,
episode, chunk) and its scene from (task, episode). The table is :mod:`~xvla.sim.report`'s, as for
Meta-World.

``policy_url`` drives a running ``xvla serve`` through its official ``POST /act`` endpoint
(:class:`~xvla.serve.client.RemotePolicy`) instead of an in-process policy (the noise travels with each
request, so the numbers are the same).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..serve.client import RemotePolicy
from .episode_store import EpisodeStore
from .libero import IMAGE_KEY, MAX_STEPS, STATE_SOURCES, WRIST_KEY, check_suite
from .libero_pool import EpisodeSpec, episode_specs, run_episodes
from .report import RESULTS_JSON, RESULTS_MD, summarize
from .report import markdown_table as report_table

logger = logging.getLogger(__name__)

# Settings that change the outcome of an episode: a resumed run must match them.
PROTOCOL_FIELDS = (
    "policy",
    "policy_url",
    "suite",
    "max_steps",
    "state_source",
    "seed",
    "domain_id",
    "n_action_steps",
    "denoising_steps",
    "settle_steps",
    "camera_size",
)


@dataclass
class LiberoEvalConfig:
    policy: str | None = field(
        default=None, metadata={"help": "checkpoint folder or Hub id (in-process policy)"}
    )
    policy_url: str | None = field(
        default=None, metadata={"help": "or the URL of a running `xvla serve` (POST /act)"}
    )
    suite: str = field(
        default="libero_spatial", metadata={"help": "libero_spatial, libero_object, libero_goal or libero_10"}
    )
    tasks: list[int] | None = field(
        default=None, metadata={"help": "task ids, comma-separated (default: every task of the suite)"}
    )
    episodes_per_task: int = field(default=50, metadata={"help": "episodes per task (the protocol's 50)"})
    num_envs: int = field(default=4, metadata={"help": "parallel simulator processes"})
    max_steps: int | None = field(
        default=None, metadata={"help": "actions per episode (default: the suite's, 800; libero_10 900)"}
    )
    state_source: str = field(
        default="open_loop",
        metadata={
            "help": "open_loop (the previous chunk's last action after the first query) or measured; see docs/libero.md"
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "flow-matching noise; scenes follow the protocol (init state i, env seed 142 + i)"},
    )
    domain_id: int | None = field(
        default=None,
        metadata={"help": "default: the checkpoint's LIBERO domain if its table names one, else 3"},
    )
    n_action_steps: int | None = field(
        default=None,
        metadata={
            "help": "actions executed per chunk (default: the whole chunk, 30 for the released checkpoints)"
        },
    )
    denoising_steps: int | None = field(
        default=None, metadata={"help": "default: the policy's (10 for the released checkpoints)"}
    )
    settle_steps: int = field(default=10, metadata={"help": "no-op steps after a reset while objects settle"})
    camera_size: int = field(default=256, metadata={"help": "render size in pixels"})
    videos: int = field(default=3, metadata={"help": "episodes saved as mp4 (episode 0 of the first tasks)"})
    output: str = field(
        default="outputs/libero", metadata={"help": "results folder (resumed if it holds a run)"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    fast: bool = field(
        default=False,
        metadata={"help": "the fastest correct setting for this machine (`xvla info --hardware`)"},
    )
    overwrite: bool = field(default=False, metadata={"help": "start again instead of resuming"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    start_method: str = field(
        default="spawn",
        metadata={
            "help": "multiprocessing start method: workers never inherit this process's torch threads or GL state"
        },
    )

    def __post_init__(self) -> None:
        check_suite(self.suite)
        if self.policy is not None and self.policy_url is not None:
            raise ValueError(
                "give one of policy (a checkpoint path or Hub id) and policy_url (a running server), not both"
            )
        if self.state_source not in STATE_SOURCES:
            raise ValueError(
                f"state_source={self.state_source!r}: choose 'open_loop' (official) or 'measured' (LeRobot)"
            )
        for name in ("episodes_per_task", "num_envs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be >= 1 (or None: the whole chunk)")
        if self.max_steps is None:
            self.max_steps = MAX_STEPS[self.suite]
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1")


NO_POLICY = (
    "no policy: give --policy.path (a checkpoint folder or Hub id) or --policy.url (a running `xvla serve`)"
)


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
    message = (
        f"domain_id={domain_id} ({name}) on a checkpoint whose name or config mentions LIBERO: it was "
        f"trained with domain id {expected} for LIBERO (the released base's table: 3); pass --domain-id "
        f"{expected} unless you fine-tuned on another id"
    )
    warnings.warn(message, DomainIdWarning, stacklevel=2)
    return message


def markdown_table(report: dict[str, Any]) -> str:
    s = report["settings"]
    who = s["policy"] or s["policy_url"] or "a policy object"
    caption = (
        f"{s['episodes_per_task']} episodes per task (init states 0-{s['episodes_per_task'] - 1}, env seed 142 + "
        f"episode), at most {s['max_steps']} steps, state `{s['state_source']}`, domain {s['domain_id']}; success "
        "with a 95% Wilson interval."
    )
    return report_table(f"LIBERO `{s['suite']}`: {who}", caption, report, instructions=True, decimals=1)


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
        domain_warning = check_domain_id(
            cfg.domain_id, f"{cfg.policy or ''} {policy_description(policy)}", expected
        )
        settings = {k: getattr(cfg, k) for k in PROTOCOL_FIELDS}
        store = EpisodeStore(cfg.output, settings, cfg.overwrite, derived=(RESULTS_JSON, RESULTS_MD))
        specs = episode_specs(task_ids, cfg.episodes_per_task, cfg.videos)
        timing, ran = _run_missing(policy, specs, cfg, instructions, store)
    finally:
        if own_policy and hasattr(policy, "close"):
            policy.close()
    records = [store.records[(s.task_id, s.episode)] for s in specs]
    report = _report(cfg, records, task_ids, instructions, timing, time.perf_counter() - start, ran)
    report["warnings"] = [domain_warning] if domain_warning else []
    out = Path(cfg.output)
    (out / RESULTS_JSON).write_text(json.dumps(report, indent=2))
    (out / RESULTS_MD).write_text(markdown_table(report))
    return report


def _run_missing(
    policy: Any, specs: list[EpisodeSpec], cfg: LiberoEvalConfig, instructions: list[str], store: EpisodeStore
) -> tuple[dict[str, float], int]:
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


def _report(
    cfg: LiberoEvalConfig,
    records: list[dict],
    task_ids: list[int],
    instructions: list[str],
    timing: dict,
    wall_s: float,
    ran: int,
) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "overwrite")}
    settings["tasks"] = task_ids
    steps = max(int(timing["env_steps"]), 1)
    outcomes = [(r["task_id"], r["success"], r["length"]) for r in records]
    return {
        "settings": settings,
        **summarize(outcomes, {t: instructions[t] for t in task_ids}),
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
