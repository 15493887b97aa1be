"""``xvla demo``: the whole X-VLA recipe, small enough for a 2-core CPU, offline.

1. scripted demonstrations (``gen-demos``) of a few Meta-World tasks on several embodiment variants;
2. Phase I: a small X-VLA (a tiny Florence-2 trained from scratch) on a mixture of the training
   variants, each with its own domain id (soft prompt + domain-aware action heads);
3. Phase II: adaptation to a held-out variant with the ``prompt`` recipe (only the new domain's soft
   prompt and action-head rows train, starting from the Phase I checkpoint);
4. closed-loop evaluation: Phase I on the training variants, and on the held-out variant the Phase I
   model before adaptation (with the first training variant's prompt) vs. after;
5. a report folder: README.md (what was trained, on what, for how long, results with 95% Wilson
   intervals), loss curves, success bars and a rollout video.

Everything runs through the library's Python APIs (``generate_demonstrations``, ``train``,
``evaluate``); the defaults are sized for ~15 minutes on 2 CPU cores and flags scale them up.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..flags import add_dataclass_flags, dataclass_from_args, documented
from ..utils import write_json

DEFAULT_TASKS = "button-press-topdown,drawer-close,handle-press"
DEFAULT_TRAIN_VARIANTS = "sawyer,sawyer-rot90"
DEFAULT_HELDOUT = "sawyer-topdown"


@dataclass
class DemoSettings:
    output: str = documented(
        "outputs/demo", "folder for everything the demo writes; the report goes to OUTPUT/report"
    )
    tasks: str = documented(DEFAULT_TASKS, "comma-separated Meta-World tasks")
    train_variants: str = documented(
        DEFAULT_TRAIN_VARIANTS, "embodiment variants Phase I trains on, one domain id each"
    )
    heldout_variant: str = documented(
        DEFAULT_HELDOUT, "the variant Phase II adapts to with soft prompts only"
    )
    episodes_per_task: int = documented(20, "scripted demonstrations per task and training variant")
    heldout_episodes_per_task: int | None = documented(
        None, "demonstrations per task on the held-out variant (default: as above)"
    )
    steps_phase1: int = documented(1200, "Phase I (pretraining) optimizer steps")
    steps_phase2: int = documented(300, "Phase II (soft-prompt adaptation) optimizer steps")
    eval_episodes: int = documented(5, "closed-loop evaluation episodes per task and variant")
    image_size: int = documented(64, "camera size in pixels (square)")
    seed: int = documented(
        0, "seed of the demonstrations' layouts and of training (evaluation layouts are fixed: seed 1000)"
    )
    workers: int = documented(2, "simulator processes for demonstrations and evaluation")
    batch_size: int = documented(32, "training batch size (both phases)")
    lr_phase1: float = documented(5e-4, "Phase I peak learning rate")
    lr_phase2: float = documented(1e-3, "Phase II peak learning rate")
    eval_max_steps: int = documented(150, "actions per evaluation episode before it counts as a failure")
    threads: int | None = documented(None, "torch threads in the main process (default: all cores)")
    # the model: a tiny Florence-2 (from scratch) and a small soft-prompted transformer
    vlm_width: int = documented(48, "width of the tiny Florence-2 trained from scratch")
    hidden_size: int = documented(96, "width of the soft-prompted action transformer")
    depth: int = documented(3, "blocks of the action transformer")
    chunk_size: int = documented(8, "actions per predicted chunk")
    n_action_steps: int = documented(4, "actions of each chunk executed before the next is asked for")
    denoising_steps: int = documented(4, "flow-matching integration steps per chunk")
    progress: bool = documented(True, "progress bars")
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in (
            "episodes_per_task",
            "steps_phase1",
            "steps_phase2",
            "eval_episodes",
            "workers",
            "batch_size",
            "eval_max_steps",
            "chunk_size",
            "n_action_steps",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} is invalid: it must be >= 1")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f"n_action_steps={self.n_action_steps} must be <= chunk_size={self.chunk_size}")


# ---------------------------------------------------------------------------------------------- pieces
def build_tokenizer(texts: list[str], vocab_size: int = 300):
    """The demo's tokenizer, trained here on the instructions (offline)."""
    from ..tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(texts, vocab_size)


def model_fields(s: DemoSettings, num_domains: int, action_dim: int, domain_id: int) -> dict[str, Any]:
    from ..config import tiny_florence_config

    fields = dict(
        hidden_size=s.hidden_size,
        depth=s.depth,
        num_heads=4,
        num_domains=num_domains,
        len_soft_prompts=8,
        dim_time=32,
        max_len_seq=512,
        chunk_size=s.chunk_size,
        n_action_steps=s.n_action_steps,
        action_mode="auto",
        real_action_dim=action_dim,
        max_action_dim=max(8, action_dim),
        max_state_dim=8,
        florence_config=tiny_florence_config(width=s.vlm_width, vocab_size=300),
        image_size=(s.image_size,) * 2,
        tokenizer_max_length=16,
        num_denoising_steps=s.denoising_steps,
        domain_id=domain_id,
        image_keys=["observation.images.main", "observation.images.wrist"],
    )
    fields.update(s.model_overrides)
    return fields


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _train(values: dict[str, Any], tokenizer) -> tuple[Any, float]:
    from ..train.config import build_train_config
    from ..train.trainer import train

    start = time.perf_counter()
    result = train(build_train_config(None, values), tokenizer=tokenizer)
    return result, time.perf_counter() - start


def _eval(s: DemoSettings, policy, tasks, variant, out: Path, domain_id=None, videos: int = 0) -> dict:
    from .evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        policy=str(out),
        tasks=tasks,
        variant=variant,
        episodes_per_task=s.eval_episodes,
        seed=1000,
        num_envs=s.workers,
        max_steps=s.eval_max_steps,
        videos=videos,
        output=str(out),
        domain_id=domain_id,
        image_size=s.image_size,
        progress=s.progress,
    )
    return evaluate(cfg, policy=policy)


# ---------------------------------------------------------------------------------------------- pipeline
def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Demonstrations -> Phase I -> Phase II (prompts only) -> closed-loop evaluation -> report."""
    import torch

    from ..train.params import parameter_totals
    from .instructions import INSTRUCTIONS, resolve_tasks

    s.validate()
    t_all = time.perf_counter()
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(s.output)
    out.mkdir(parents=True, exist_ok=True)
    tasks = resolve_tasks(s.tasks)
    train_vs, held = _variants(s)
    timings: dict[str, float] = {}
    summary = _make_demos(s, out / "demos", tasks, train_vs, held, timings)
    tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))
    ids = [v.domain_id for v in [*train_vs, held]]
    fields = model_fields(
        s, max(ids) + 1, max(v.action.action_dim for v in [*train_vs, held]), train_vs[0].domain_id
    )
    p1, p2 = _train_phases(s, out, fields, train_vs, held, tokenizer, timings)
    results = _evaluate_phases(s, out / "eval", tasks, train_vs, held, p1, p2, tokenizer, timings)

    _log("5/5 report")
    report_dir = _fresh(out / "report")
    report_dir.mkdir(parents=True)
    rows = _rows(results, train_vs, held, summary, tasks)
    timings["total_s"] = time.perf_counter() - t_all
    info = {
        "settings": asdict(s),
        "tasks": tasks,
        "train_variants": [v.name for v in train_vs],
        "heldout": held.name,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "rows": rows,
        "params": {"phase1": parameter_totals(p1.trainable), "phase2": parameter_totals(p2.trainable)},
        "frames": {name: v["frames"] for name, v in summary["variants"].items()},
        "episodes": {name: v["episodes"] for name, v in summary["variants"].items()},
        "final_loss": {"phase1": _last_loss(p1), "phase2": _last_loss(p2)},
        "threads": torch.get_num_threads(),
    }
    _write_report(report_dir, info, p1, p2, results, fields)
    write_json((report_dir / "results.json"), info)
    info["table"] = results_table(rows)
    info["report_dir"] = str(report_dir)
    return info


def _variants(s: DemoSettings) -> tuple[list, Any]:
    from .variants import get_variant, resolve_variants

    train_vs = resolve_variants(s.train_variants)
    held = get_variant(s.heldout_variant)
    if held.name in {v.name for v in train_vs}:
        raise ValueError(f"heldout_variant={held.name!r} is also a training variant: choose another one")
    ids = [v.domain_id for v in train_vs] + [held.domain_id]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the variants' domain ids {ids} must differ (one soft prompt per variant)")
    return train_vs, held


def _make_demos(s: DemoSettings, demos_dir: Path, tasks, train_vs, held, timings: dict) -> dict:
    from .gen_demos import DemoConfig, generate_demonstrations

    _log("1/5 scripted demonstrations")
    t = time.perf_counter()
    common = dict(
        output=str(demos_dir),
        tasks=tasks,
        seed=s.seed,
        workers=s.workers,
        image_size=s.image_size,
        overwrite=True,
        progress=s.progress,
    )
    summary = generate_demonstrations(
        DemoConfig(variants=train_vs, episodes_per_task=s.episodes_per_task, **common)
    )
    held_eps = s.heldout_episodes_per_task or s.episodes_per_task
    held_summary = generate_demonstrations(DemoConfig(variants=[held], episodes_per_task=held_eps, **common))
    summary["variants"].update(held_summary["variants"])
    write_json((demos_dir / "summary.json"), summary)
    timings["demos_s"] = time.perf_counter() - t
    return summary


def _train_phases(s: DemoSettings, out: Path, fields: dict, train_vs, held, tokenizer, timings: dict):
    """Phase I on the training variants (one domain each); Phase II: prompts only, on the held-out variant."""
    demos_dir = out / "demos"
    common_train = dict(
        batch_size=s.batch_size,
        num_workers=0,
        log_freq=25,
        tensorboard=False,
        device="cpu",
        seed=s.seed,
        keep_last=1,
    )
    _log(f"2/5 Phase I: {s.steps_phase1} steps on {[v.name for v in train_vs]}")
    p1, timings["phase1_s"] = _train(
        {
            "recipe": "lerobot",
            "policy": fields,
            "output_dir": str(_fresh(out / "phase1")),
            "steps": s.steps_phase1,
            "save_freq": s.steps_phase1,
            "mixture": {
                "datasets": [{"root": str(demos_dir / v.name), "domain_id": v.domain_id} for v in train_vs]
            },
            "optimizer": {"lr": s.lr_phase1, "vlm_lr_scale": 1.0},
            "scheduler": {
                "warmup_steps": min(100, s.steps_phase1),
                "decay_steps": s.steps_phase1,
                "auto_scale": False,
                "min_lr_ratio": 0.1,
            },
            **common_train,
        },
        tokenizer,
    )
    _log(f"3/5 Phase II: {s.steps_phase2} steps of the prompt recipe on {held.name}")
    p2, timings["phase2_s"] = _train(
        {
            "recipe": "prompt",
            "policy": {"path": str(p1.final_model_dir)},
            "output_dir": str(_fresh(out / "phase2")),
            "steps": s.steps_phase2,
            "save_freq": s.steps_phase2,
            "dataset": {"root": str(demos_dir / held.name), "domain_id": held.domain_id},
            "new_domain": {"id": held.domain_id},
            "optimizer": {"lr": s.lr_phase2},
            "scheduler": {"warmup_steps": min(50, s.steps_phase2)},
            **common_train,
        },
        tokenizer,
    )
    return p1, p2


def _evaluate_phases(
    s: DemoSettings, eval_dir: Path, tasks, train_vs, held, p1, p2, tokenizer, timings
) -> dict:
    """Phase I on its variants; the held-out variant before (a training domain's prompt) and after Phase II."""
    from ..policy import XVLAPolicy

    _log("4/5 closed-loop evaluation")
    t = time.perf_counter()
    eval_dir = _fresh(eval_dir)
    phase1 = XVLAPolicy.from_pretrained(p1.final_model_dir, tokenizer=tokenizer)
    adapted = XVLAPolicy.from_pretrained(p2.final_model_dir, tokenizer=tokenizer)
    results: dict[str, dict] = {}
    for i, v in enumerate(train_vs):
        results[f"phase1/{v.name}"] = _eval(
            s, phase1, tasks, v, eval_dir / f"phase1_{v.name}", videos=int(i == 0)
        )
    results[f"before/{held.name}"] = _eval(
        s, phase1, tasks, held, eval_dir / f"before_{held.name}", domain_id=train_vs[0].domain_id
    )
    results[f"after/{held.name}"] = _eval(s, adapted, tasks, held, eval_dir / f"after_{held.name}", videos=1)
    timings["eval_s"] = time.perf_counter() - t
    return results


def _log(message: str) -> None:
    print(f"[xvla demo] {message}", flush=True)


def _last_loss(result) -> float | None:
    losses = [h["loss"] for h in result.history if "loss" in h]
    return round(float(sum(losses[-4:]) / len(losses[-4:])), 4) if losses else None


def _rows(results: dict, train_vs, held, summary, tasks) -> list[dict]:
    rows = []
    for key, rep in results.items():
        stage, variant = key.split("/", 1)
        label = {
            "phase1": "Phase I policy (training variant)",
            "before": "Phase I policy, before adaptation (held-out; first training variant's prompt)",
            "after": "after Phase II prompt adaptation (held-out)",
        }[stage]
        o = rep["overall"]
        expert = summary["variants"].get(variant, {}).get("tasks", {})
        tried = sum(t["attempts"] for t in expert.values())
        kept = sum(t["episodes"] for t in expert.values())
        rows.append(
            {
                "stage": stage,
                "label": label,
                "variant": variant,
                "successes": o["successes"],
                "episodes": o["episodes"],
                "success_rate": o["success_rate"],
                "ci95": o["ci95"],
                "per_task": {t: rep["per_task"][t]["successes"] for t in tasks},
                "expert": [kept, tried],
            }
        )
    return rows


def results_table(rows: list[dict]) -> str:
    lines = [
        "| stage | variant | success | 95% CI | per task | expert (demos) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ci95"]
        per = ", ".join(f"{t.removesuffix('-v3')} {k}" for t, k in r["per_task"].items())
        kept, tried = r["expert"]
        lines.append(
            f"| {r['label']} | `{r['variant']}` | {r['successes']}/{r['episodes']} ({100 * r['success_rate']:.0f}%) | "
            f"{100 * lo:.0f}-{100 * hi:.0f}% | {per} | {kept}/{tried} |"
        )
    return "\n".join(lines)


def _success_bars(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['stage']}\n{r['variant']}" for r in rows]
    rates = [100 * r["success_rate"] for r in rows]
    lows = [100 * (r["success_rate"] - r["ci95"][0]) for r in rows]
    highs = [100 * (r["ci95"][1] - r["success_rate"]) for r in rows]
    colors = {"phase1": "tab:blue", "before": "tab:gray", "after": "tab:green"}
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 2, 4))
    ax.bar(names, rates, yerr=[lows, highs], capsize=5, color=[colors[r["stage"]] for r in rows])
    experts = [100 * r["expert"][0] / r["expert"][1] if r["expert"][1] else float("nan") for r in rows]
    ax.scatter(names, experts, marker="_", s=600, color="black", label="scripted expert", zorder=3)
    ax.set_ylim(0, 105)
    ax.set_ylabel("success rate (%)")
    ax.set_title("closed-loop success (95% Wilson intervals)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _copy_report_assets(report_dir: Path, info: dict, p1, p2, results: dict) -> list[str]:
    """Loss curves, the success bars and one rollout video per evaluation into the report; the video names."""
    for name, result in (("phase1", p1), ("phase2", p2)):
        curve = Path(result.output_dir) / "loss_curve.png"
        if curve.is_file():
            shutil.copy(curve, report_dir / f"loss_{name}.png")
    _success_bars(info["rows"], report_dir / "success.png")
    videos = []
    for key, rep in results.items():
        for v in rep.get("videos", []):
            dst = report_dir / f"rollout_{key.replace('/', '_')}.mp4"
            shutil.copy(Path(rep["settings"]["output"]) / v, dst)
            videos.append(dst.name)
    return videos


def _write_report(report_dir: Path, info: dict, p1, p2, results: dict, fields: dict) -> None:
    s = info["settings"]
    videos = _copy_report_assets(report_dir, info, p1, p2, results)
    t = info["timings_s"]
    phase1_rows = [r for r in info["rows"] if r["stage"] == "phase1"]
    k = sum(r["successes"] for r in phase1_rows)
    n = sum(r["episodes"] for r in phase1_rows)
    before = next(r for r in info["rows"] if r["stage"] == "before")
    after = next(r for r in info["rows"] if r["stage"] == "after")
    lines = [
        "# xvla demo report",
        "",
        f"Wall-clock: {t['total_s'] / 60:.1f} min on {os.cpu_count()} CPU core(s), {info['threads']} torch thread(s) "
        f"(demonstrations {t['demos_s']:.0f} s, Phase I {t['phase1_s']:.0f} s, Phase II {t['phase2_s']:.0f} s, "
        f"evaluation {t['eval_s']:.0f} s).",
        "",
        "## What was reached",
        "",
        f"- Phase I policy on the training variants: **{k}/{n} episodes ({100 * k / max(n, 1):.0f}%)** "
        f"(the aim is at least half; the scripted experts succeed on nearly all).",
        f"- Held-out variant `{info['heldout']}`: **{before['successes']}/{before['episodes']}** before adaptation, "
        f"**{after['successes']}/{after['episodes']}** after prompt-only adaptation.",
        "",
        "## Results",
        "",
        results_table(info["rows"]),
        "",
        "Success = Meta-World's own success flag within "
        f"{s['eval_max_steps']} actions; {s['eval_episodes']} evaluation episodes per task on layouts of seed 1000 "
        "(the demonstrations use seed 0, so no evaluation layout was seen in training). Expert column: "
        "successful / attempted scripted episodes while generating the demonstrations. "
        "'Before adaptation' runs the Phase I checkpoint on the held-out variant with the first training "
        "variant's domain id (its soft prompt and action heads), the best it can do without new data.",
        "",
        "![success](success.png)",
        "",
        *_training_section(info, fields),
        "## Files",
        "",
        "- `../demos/<variant>/`: the LeRobot v3.0 datasets; `../phase1/`, `../phase2/`: training runs "
        "(`final/` is the model); `../eval/*/`: per-evaluation `results.json` / `results.md` / videos.",
        *(f"- Rollout video: [{v}]({v})" for v in videos),
        "",
        "Reproduce: `xvla demo " + " ".join(_flags(s)) + "`",
    ]
    (report_dir / "README.md").write_text("\n".join(lines) + "\n")


def _training_section(info: dict, fields: dict) -> list[str]:
    """The report's "what was trained" section: data, model, both phases."""
    s, t = info["settings"], info["timings_s"]
    p1_train, p1_total = info["params"]["phase1"]
    p2_train, p2_total = info["params"]["phase2"]
    train_frames = sum(info["frames"][v] for v in info["train_variants"])
    train_eps = sum(info["episodes"][v] for v in info["train_variants"])
    return [
        "## What was trained, on what, for how long",
        "",
        f"- Tasks: {', '.join(info['tasks'])}; images {s['image_size']}x{s['image_size']} px (main + wrist camera), "
        "state = hand xyz + gripper (no object or goal positions: the goal comes from the images).",
        f"- Demonstrations: Meta-World's scripted experts, {s['episodes_per_task']} successful episodes per task on "
        f"each training variant ({', '.join(info['train_variants'])}: {train_eps} episodes, {train_frames:,} frames) "
        f"and {info['episodes'][info['heldout']]} episodes ({info['frames'][info['heldout']]:,} frames) on the held-out "
        f"variant `{info['heldout']}`.",
        f"- Model: X-VLA from scratch, tiny Florence-2 (width {s['vlm_width']}, 2 stages), soft-prompted transformer "
        f"(hidden {fields['hidden_size']}, depth {fields['depth']}), {fields['num_domains']} domains, chunk "
        f"{fields['chunk_size']} (first {fields['n_action_steps']} executed), {fields['num_denoising_steps']} flow-"
        f"matching steps; {p1_total:,} parameters.",
        f"- Phase I: `lerobot` recipe, AdamW lr {s['lr_phase1']:g} (warm-up 100, cosine to 0.1x), batch "
        f"{s['batch_size']}, {s['steps_phase1']} steps ({s['steps_phase1'] * s['batch_size']:,} samples) in "
        f"{t['phase1_s']:.0f} s, all {p1_train:,} parameters trained, each training variant with its own domain id; "
        f"final loss {info['final_loss']['phase1']}.",
        f"- Phase II: `prompt` recipe on `{info['heldout']}` (new domain {after_domain(info)}), lr {s['lr_phase2']:g}, "
        f"batch {s['batch_size']}, {s['steps_phase2']} steps in {t['phase2_s']:.0f} s; trainable {p2_train:,} of "
        f"{p2_total:,} parameters ({100 * p2_train / max(p2_total, 1):.2f}%: the new domain's soft prompt and "
        f"action-head rows); final loss {info['final_loss']['phase2']}.",
        "",
        "![Phase I loss](loss_phase1.png)",
        "",
        "![Phase II loss](loss_phase2.png)",
        "",
    ]


def after_domain(info: dict) -> int:
    from .variants import get_variant

    return get_variant(info["heldout"]).domain_id


def _flags(s: dict) -> list[str]:
    names = (
        "output",
        "tasks",
        "train_variants",
        "heldout_variant",
        "episodes_per_task",
        "steps_phase1",
        "steps_phase2",
        "eval_episodes",
        "image_size",
        "seed",
    )
    return [f"--{n.replace('_', '-')} {s[n]}" for n in names]


# ---------------------------------------------------------------------------------------------- CLI
def cmd_demo(args) -> int:
    info = run_demo(dataclass_from_args(DemoSettings, args))
    print()
    print(info["table"])
    print(f"\ndone in {info['timings_s']['total_s'] / 60:.1f} min; report: {info['report_dir']}/README.md")
    return 0


def register_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole recipe on a CPU: demonstrations, Phase I, Phase II (prompts), evaluation, report",
        description="Generate Meta-World demonstrations on a few embodiment variants, pretrain a small X-VLA on them "
        "(Phase I), adapt it to a held-out variant with soft prompts only (Phase II), evaluate closed loop and "
        "write a report folder (OUTPUT/report). Offline; flags scale it up.",
    )
    add_dataclass_flags(p, DemoSettings, skip=("model_overrides",), aliases={"output": ["-o"]})
    p.set_defaults(func=cmd_demo)
