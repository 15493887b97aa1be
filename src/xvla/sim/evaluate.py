"""``xvla eval``: closed-loop success rates of a checkpoint on Meta-World tasks, as one embodiment variant.

Writes to ``output``::

    results.json     per task: successes, episodes, success rate with a 95% Wilson interval, mean
                     episode length (all episodes and successful ones); the overall numbers; settings
    results.md       the same as a markdown table
    videos/*.mp4     a few episodes (all cameras side by side)

The policy sees exactly what a dataset made by ``xvla gen-demos`` holds for the same variant (the
same cameras, state and instruction) and goes through ``XVLAPolicy``'s own processing, so training
and evaluation preprocess identically. Layouts come from ``episode_seed(seed, task, i)``; the
default evaluation seed (1000) differs from the demonstration seed (0), so evaluation layouts are
not the training layouts.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..domains import resolve_domain
from ..utils import write_json
from .instructions import instruction, resolve_tasks
from .report import RESULTS_JSON, RESULTS_MD, summarize
from .report import markdown_table as report_table
from .rollout import EpisodeResult, EpisodeSpec, run_rollouts
from .variants import EmbodimentVariant, get_variant

logger = logging.getLogger(__name__)

EXPERT = "expert"


@dataclass
class EvalConfig:
    policy: str = field(
        metadata={"help": "checkpoint folder or Hub id, or 'expert' (Meta-World's scripted policies)"}
    )
    tasks: str | list[str] = field(
        default="mt10", metadata={"help": "task set (mt10, mt50, easy) or comma-separated names"}
    )
    variant: str | EmbodimentVariant = field(
        default="sawyer", metadata={"help": "embodiment variant name or JSON file"}
    )
    episodes_per_task: int = field(default=10, metadata={"help": "episodes per task"})
    seed: int = field(default=1000, metadata={"help": "base seed of the layouts and noise"})
    num_envs: int = field(default=2, metadata={"help": "parallel simulator processes"})
    max_steps: int = field(default=200, metadata={"help": "actions per episode"})
    videos: int = field(default=3, metadata={"help": "episodes saved as mp4"})
    output: str = field(default="outputs/eval", metadata={"help": "results folder (JSON, markdown, videos)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    dtype: str | None = field(
        default=None, metadata={"help": "float32 or bfloat16 (default: the checkpoint's)"}
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": "the fastest correct setting for this machine (`xvla info --hardware`); explicit --dtype/--quantize/--compile win"
        },
    )
    compile: bool | None = field(
        default=None, metadata={"help": "the fast path (compiled graphs; default: off, or --fast's choice)"}
    )
    quantize: str | None = field(
        default=None, metadata={"help": "int8: int8 linear layers (CPU; use with --compile)"}
    )
    domain_id: int | None = field(
        default=None, metadata={"help": "default: the domain the checkpoint trained for this variant"}
    )
    n_action_steps: int | None = field(
        default=None, metadata={"help": "actions executed per chunk (default: the checkpoint's)"}
    )
    denoising_steps: int | None = field(default=None, metadata={"help": "default: the checkpoint's"})
    action_horizon_s: float | None = field(
        default=None, metadata={"help": "the chunk spans this many seconds (if trained so)"}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "camera size in pixels (default: the variant's)"}
    )
    key_map: dict[str, str] = field(
        default_factory=dict, metadata={"help": "model key=simulator key pairs, comma-separated"}
    )
    privileged_state: bool = field(
        default=False,
        metadata={"help": "append object and goal positions to the state (for policies trained so)"},
    )
    start_method: str | None = None
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    execution: str = field(
        default="sync",
        metadata={
            "help": "how chunks are executed while the next one is computed: "
            "sync, replace, blend, ensemble or rtc (docs/realtime.md)"
        },
    )
    delay_steps: int = field(default=0, metadata={"help": "simulated inference delay, in control steps"})

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = resolve_tasks(self.tasks)
        self.variant = get_variant(self.variant).with_image_size(self.image_size)
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task={self.episodes_per_task} must be >= 1")
        if self.num_envs < 1:
            raise ValueError(f"num_envs={self.num_envs} must be >= 1")
        if self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps} must be >= 1")
        from ..execution.strategies import check_strategy

        self.execution = check_strategy(self.execution)
        if self.delay_steps < 0:
            raise ValueError(f"delay_steps={self.delay_steps} must be >= 0 control steps")


def load_policy(config: EvalConfig):
    if config.policy == EXPERT:
        from .experts import ScriptedExpertPolicy

        return ScriptedExpertPolicy(config.variant)
    from ..policy import XVLAPolicy

    overrides = {"dtype": config.dtype} if config.dtype else {}
    return XVLAPolicy.from_pretrained(
        config.policy,
        device=config.device,
        compile=config.compile,
        quantize=config.quantize,
        fast=config.fast,
        **overrides,
    )


def episode_specs(tasks: list[str], episodes_per_task: int, seed: int, videos: int) -> list[EpisodeSpec]:
    """Episodes task by task; the first episodes of successive tasks are the recorded ones."""
    from .metaworld_env import episode_seed

    record = set()
    for i in range(episodes_per_task):
        for task in tasks:
            if len(record) < videos:
                record.add((task, i))
    return [
        EpisodeSpec(task, i, episode_seed(seed, task, i), (task, i) in record)
        for task in tasks
        for i in range(episodes_per_task)
    ]


def write_video(path: Path, frames: list[np.ndarray], fps: int, min_height: int = 192) -> Path:
    """An mp4 of HxWx3 uint8 frames, enlarged by an integer factor (nearest) to at least ``min_height``."""
    from ..data.video import VideoEncoder

    factor = max(1, math.ceil(min_height / frames[0].shape[0]))
    encoder = VideoEncoder(path, fps=fps, crf=20, gop=None, name=path.stem)
    try:
        for frame in frames:
            if factor > 1:
                frame = frame.repeat(factor, axis=0).repeat(factor, axis=1)
            encoder.add(np.ascontiguousarray(frame))
    except BaseException:
        encoder.abort()
        raise
    return encoder.close()


def save_videos(results: list[EpisodeResult], out: Path, fps: int) -> list[str]:
    """The recorded episodes as ``videos/<task>_ep<i>_<success|failure>.mp4``; their paths relative to ``out``."""
    videos = []
    for r in results:
        if r.frames:
            name = f"{r.task}_ep{r.index:03d}_{'success' if r.success else 'failure'}.mp4"
            write_video(out / "videos" / name, r.frames, fps)
            videos.append(f"videos/{name}")
    return videos


def markdown_table(report: dict[str, Any]) -> str:
    s = report["settings"]
    title = f"Evaluation: {s['policy']} on variant `{s['variant']['name']}` (domain {s['domain_id']})"
    caption = (
        f"{s['episodes_per_task']} episodes per task, seed {s['seed']}, at most {s['max_steps']} steps; "
        "success rate with a 95% Wilson interval."
    )
    return report_table(title, caption, report, instructions=False, decimals=0)


def eval_domain(policy: Any, config: EvalConfig) -> tuple[int, str]:
    """The domain to evaluate: --domain-id, else what the checkpoint trained for this variant (by name or id)."""
    variant = config.variant
    if getattr(policy, "config", None) is None:  # the scripted experts take no domain
        return (variant.domain_id if config.domain_id is None else config.domain_id), "scripted expert"
    return resolve_domain(
        policy.config, config.domain_id, variant.domain_id, f"variant {variant.name!r}", variant.name
    )


def evaluate(config: EvalConfig, policy: Any = None) -> dict[str, Any]:
    """Run the evaluation and write the report; ``policy`` overrides loading ``config.policy``."""
    start = time.perf_counter()
    policy = load_policy(config) if policy is None else policy
    variant = config.variant
    domain, why = eval_domain(policy, config)
    logger.info("evaluating domain %d (%s)", domain, why)
    specs = episode_specs(config.tasks, config.episodes_per_task, config.seed, config.videos)
    results, timings = run_rollouts(
        policy,
        specs,
        variant,
        num_envs=config.num_envs,
        max_steps=config.max_steps,
        domain_id=domain,
        n_action_steps=config.n_action_steps,
        denoising_steps=config.denoising_steps,
        action_horizon_s=config.action_horizon_s,
        noise_seed=config.seed,
        privileged_state=config.privileged_state,
        start_method=config.start_method,
        progress=config.progress,
        key_map=config.key_map,
        execution=config.execution,
        delay_steps=config.delay_steps,
    )
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    videos = save_videos(results, out, variant.fps)
    outcomes = [(r.task, r.success, r.length) for r in results]
    settings = {k: v for k, v in asdict(config).items() if k not in ("variant", "progress")}
    settings["variant"] = variant.to_dict()
    settings["domain_id"], settings["domain_reason"] = domain, why
    report = {
        "settings": settings,
        **summarize(outcomes, {task: instruction(task) for task in config.tasks}),
        "episodes": [
            {
                "task": r.task,
                "index": r.index,
                "seed": r.seed,
                "success": r.success,
                "length": r.length,
                "motion": r.motion,
            }
            for r in results
        ],
        "videos": videos,
        "timing": {
            "wall_s": round(time.perf_counter() - start, 2),
            "policy_s": round(timings["policy_s"], 2),
            "env_steps": int(timings["env_steps"]),
            "env_steps_per_s": round(timings["env_steps"] / max(timings["wall_s"], 1e-9), 1),
        },
    }
    write_json(out / RESULTS_JSON, report)
    (out / RESULTS_MD).write_text(markdown_table(report))
    return report
