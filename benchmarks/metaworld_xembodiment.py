"""X-VLA's soft-prompt claims at small scale, on Meta-World embodiment variants (2 CPU cores).

Four studies (``--study``, comma-separated; default ``hidden,fewdemo``):

* ``hidden``:  Phase I on variants that render *identically* (same cameras, image size and state) and
               differ only in their action convention (``sawyer`` and the ``sawyer-hid-*`` variants).
               ``prompts`` gives each its own domain id (soft prompt + domain-aware action heads);
               ``shared`` trains all under one domain id. Each Phase I model is evaluated on every variant.
* ``fewdemo``: adaptation to the held-out ``sawyer-topdown`` from 1, 2 and 5 demonstrations per task
               (``--few-demos``), starting from the ``visible`` study's first-seed soft-prompt model:
               prompt-only, LoRA, full fine-tuning, and the same architecture from scratch.
* ``visible``: Phase I on variants with different cameras, frames and widths (``prompts`` vs ``shared``),
               then adaptation to ``sawyer-topdown`` from ``--heldout-episodes-per-task`` demonstrations.
* ``replay``:  per task, one demonstration on the held-out variant replayed open loop on the evaluation
               layouts: how far the layouts vary (no training).

Success rates with 95% Wilson intervals go to ``--doc`` (default docs/xembodiment.md): each study
rewrites only its own section (between ``<!-- study:NAME -->`` markers), so the reading around them stays.

Resumable: every finished stage (demonstrations, each training run, each evaluation) is recorded in
``OUTPUT/stages.json`` and skipped when the script is run again with the same settings; a training run
interrupted mid-way resumes from its last checkpoint (every ``--save-every`` steps).

    python benchmarks/metaworld_xembodiment.py                   # hidden + fewdemo, about 70 min on 2 cores
    python benchmarks/metaworld_xembodiment.py --quick           # tiny settings, a pipeline check (< 15 min)
    python benchmarks/metaworld_xembodiment.py --study visible   # the camera-visible study
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STUDIES = ("hidden", "fewdemo", "visible", "replay")
METHODS = {  # adaptation method -> (label, training recipe, starts from the Phase I model)
    "prompt": ("prompts only (adapter file)", "prompt", True),
    "lora": ("LoRA r=8 + prompts", "lora", True),
    "full": ("full fine-tuning", "lerobot", True),
    "scratch": ("from scratch", "lerobot", False),
}
SCHEDULE = dict(auto_scale=False, min_lr_ratio=0.1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--study", default="hidden,fewdemo", help=f"comma-separated, of {', '.join(STUDIES)}")
    a("--output", help="default: outputs/bench_xembodiment (with --quick: outputs/bench_xembodiment_quick)")
    a(
        "--doc",
        help="markdown results file, each study rewriting its section (default: docs/xembodiment.md; "
        "with --quick, OUTPUT/xembodiment.md)",
    )
    a("--tasks", default="button-press-topdown,drawer-close")
    a("--train-variants", default="sawyer,sawyer-rot90,sawyer-joint7", help="the visible study's Phase I")
    a("--hidden-variants", default="sawyer,sawyer-hid-rot90,sawyer-hid-mirror,sawyer-hid-scale")
    a("--heldout-variant", default="sawyer-topdown")
    a("--episodes-per-task", type=int, default=30, help="Phase I demonstrations per task and variant")
    a("--heldout-episodes-per-task", type=int, default=10, help="the visible study's adaptation data")
    a("--few-demos", default="1,2,5", help="the fewdemo study's demonstrations per task")
    a("--few-seeds", default="0", help="the fewdemo study's adaptation seeds")
    a("--steps-phase1", type=int, default=1100, help="Phase I steps of the visible study (its base model)")
    a("--steps-hidden", type=int, default=800, help="Phase I steps of the hidden study")
    a("--steps-phase2", type=int, default=300, help="adaptation steps of the visible study")
    a("--steps-fewdemo", type=int, default=200, help="adaptation steps of the fewdemo study")
    a("--eval-episodes", type=int, default=15, help="per task and variant")
    a("--image-size", type=int, default=64)
    a("--batch-size", type=int, default=32)
    a("--workers", type=int, default=2)
    a("--seeds", default="0,1", help="Phase I seeds (each Phase I setting is trained once per seed)")
    a("--save-every", type=int, default=300, help="checkpoint interval of the training runs (resume)")
    a("--threads", type=int, default=2, help="torch threads")
    a("--quick", action="store_true", help="tiny settings: checks the pipeline in a few minutes")
    a("--no-progress", action="store_true")
    a(
        "--label",
        default="",
        help="names a second section of a study run with other settings (e.g. other --tasks)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    studies = [x.strip() for x in args.study.split(",") if x.strip()]
    unknown = sorted(set(studies) - set(STUDIES))
    if unknown or not studies:
        p.error(f"--study {args.study!r}: unknown {unknown}; choose from {', '.join(STUDIES)}")
    args.studies = studies
    args.output = args.output or (
        "outputs/bench_xembodiment_quick" if args.quick else "outputs/bench_xembodiment"
    )
    args.doc = args.doc or (f"{args.output}/xembodiment.md" if args.quick else "docs/xembodiment.md")
    if args.quick:
        args.hidden_variants, args.few_demos, args.seeds, args.steps_hidden, args.steps_fewdemo = (
            "sawyer,sawyer-hid-rot90,sawyer-hid-mirror",
            "1,2",
            "0",
            120,
            60,
        )
    return args


def settings(args: argparse.Namespace):
    from xvla.sim.demo import DemoSettings

    s = DemoSettings(
        output=args.output,
        tasks=args.tasks,
        train_variants=args.train_variants,
        heldout_variant=args.heldout_variant,
        episodes_per_task=args.episodes_per_task,
        heldout_episodes_per_task=args.heldout_episodes_per_task,
        steps_phase1=args.steps_phase1,
        steps_phase2=args.steps_phase2,
        eval_episodes=args.eval_episodes,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.no_progress,
        threads=args.threads,
    )
    if args.quick:
        s = replace(
            s,
            tasks="drawer-close",
            train_variants="sawyer,sawyer-rot90",
            heldout_variant="sawyer-topdown",
            episodes_per_task=6,
            heldout_episodes_per_task=3,
            steps_phase1=120,
            steps_phase2=60,
            eval_episodes=3,
            image_size=32,
            batch_size=16,
            vlm_width=24,
            hidden_size=48,
            depth=2,
            eval_max_steps=60,
        )
    s.validate()
    return s


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


class Stages:
    """Finished stages and their results in ``OUTPUT/stages.json``; a re-run skips them."""

    def __init__(self, out: Path, fingerprint: dict):
        from xvla.utils import write_json

        self.write = write_json
        self.path = out / "stages.json"
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if saved and saved.get("settings") != fingerprint:
            raise SystemExit(f"{out} holds a run with other settings: pass another --output or delete it")
        self.data = {"settings": fingerprint, "done": saved.get("done", {})}

    def run(self, key: str, fn: Callable[[], Any]) -> Any:
        if key in self.data["done"]:
            print(f"[bench] {key}: done in an earlier run, skipped", flush=True)
            return self.data["done"][key]
        print(f"[bench] {key}", flush=True)
        value = fn()
        self.data["done"][key] = value
        self.write(self.path, self.data)
        return value


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.no_progress:  # the trainer's bar too; tqdm reads this when it is first imported
        os.environ["TQDM_DISABLE"] = "1"
    import torch

    from xvla.sim.demo import build_tokenizer
    from xvla.sim.instructions import INSTRUCTIONS
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as the `xvla` commands do
    s = settings(args)
    torch.set_num_threads(s.threads)
    out = Path(s.output)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        **asdict(s),
        "quick": args.quick,
        "hidden_variants": args.hidden_variants,
        "steps_hidden": args.steps_hidden,
        "steps_fewdemo": args.steps_fewdemo,
    }
    tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))
    bench = Bench(s, out, Stages(out, fingerprint), tokenizer, args.save_every)
    machine = (
        f"{_cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    for study in args.studies:  # each section is written as soon as its study is done
        text = STUDY_FUNCTIONS[study](bench, args)
        minutes = study_minutes([r for r in bench.rows if r["study"] == study])
        text += f"\n\nMachine: {machine}; training and evaluation {minutes:.0f} min (the sum of its stages)."
        bench.stages.write(out / "results.json", {"rows": bench.rows, "settings": fingerprint})
        write_sections(Path(args.doc), {f"{study}:{args.label}" if args.label else study: text})
        print(text, flush=True)
    return 0


def study_minutes(rows: list[dict]) -> float:
    """Wall-clock of a study's training runs (each once; a resumed run since its resume) and evaluations."""
    runs = {(r["setting"], r["seed"], r.get("demos")): r["train_s"] for r in rows}
    return (sum(runs.values()) + sum(r["eval_s"] for r in rows)) / 60


def _cpu_name() -> str:
    try:
        from xvla.hardware import probe

        return probe().cpu_model
    except Exception:  # a benchmark report should not fail on the machine description
        return platform.processor() or platform.machine()


class Bench:
    """Demonstrations, training runs and evaluations, each a stage."""

    def __init__(self, s, out: Path, stages: Stages, tokenizer, save_every: int):
        from xvla.sim.instructions import resolve_tasks

        self.s, self.out, self.stages, self.tokenizer, self.save_every = s, out, stages, tokenizer, save_every
        self.tasks = resolve_tasks(s.tasks)
        self.rows: list[dict] = []

    def demos(self, key: str, variants, episodes: int) -> Path:
        """Scripted demonstrations of ``variants`` under OUTPUT/demos/KEY (one dataset per variant)."""
        from xvla.sim.gen_demos import DemoConfig, generate_demonstrations

        folder = self.out / "demos" / key

        def make() -> dict:
            t = time.perf_counter()
            generate_demonstrations(
                DemoConfig(
                    output=str(folder),
                    tasks=self.tasks,
                    seed=0,
                    workers=self.s.workers,
                    image_size=self.s.image_size,
                    overwrite=True,
                    progress=self.s.progress,
                    variants=list(variants),
                    episodes_per_task=episodes,
                )
            )
            return {"seconds": round(time.perf_counter() - t, 1)}

        self.stages.run(f"demos/{key}", make)
        return folder

    def fields(self, variants) -> dict:
        from xvla.sim.demo import model_fields

        width = max(v.action.action_dim for v in variants)
        return model_fields(self.s, max(v.domain_id for v in variants) + 1, width, variants[0].domain_id)

    def train(self, name: str, values: dict) -> dict:
        return self.stages.run(f"train/{name}", lambda: self._train(name, values))

    def _train(self, name: str, values: dict) -> dict:
        from xvla.sim.demo import _last_loss, _train
        from xvla.train import state as st
        from xvla.train.params import parameter_totals

        out_dir = self.out / name
        resume = st.latest_checkpoint(out_dir) is not None
        if out_dir.exists() and not resume:
            shutil.rmtree(out_dir)
        base = dict(
            batch_size=self.s.batch_size,
            num_workers=0,
            log_freq=25,
            tensorboard=False,
            device="cpu",
            keep_last=1,
            output_dir=str(out_dir),
            resume=resume,
            save_freq=min(self.save_every, values["steps"]),
        )
        result, seconds = _train({**base, **values}, self.tokenizer)
        trainable, total = parameter_totals(result.trainable)
        adapter = out_dir / "adapter.safetensors"
        return {
            "model": str(result.final_model_dir),
            "seconds": round(seconds, 1),
            "resumed": resume,
            "trainable": trainable,
            "total": total,
            "final_loss": _last_loss(result),
            "adapter": str(adapter) if adapter.is_file() else None,
        }

    def phase1(
        self, name: str, demos: Path, variants, shared: bool, seed: int, steps: int, fields: dict
    ) -> dict:
        """Phase I on ``variants``: each under its own domain id, or all under the first one's."""
        first = variants[0].domain_id
        mix = [{"root": str(demos / v.name), "domain_id": first if shared else v.domain_id} for v in variants]
        return self.train(
            name,
            {
                "recipe": "lerobot",
                "policy": fields,
                "steps": steps,
                "seed": seed,
                "mixture": {"datasets": mix, "cache_frames": True},
                "optimizer": {"lr": self.s.lr_phase1, "vlm_lr_scale": 1.0},
                "scheduler": {**SCHEDULE, "warmup_steps": min(100, steps), "decay_steps": steps},
            },
        )

    def adapt(
        self, name: str, method: str, start: dict, data: Path, held, fields: dict, seed: int, steps: int
    ) -> dict:
        """``steps`` of one adaptation ``method`` (see METHODS) to ``held`` on the dataset at ``data``."""
        s, recipe = self.s, METHODS[method][1]
        values: dict[str, Any] = {
            "recipe": recipe,
            "steps": steps,
            "seed": seed,
            "dataset": {"root": str(data), "domain_id": held.domain_id},
        }
        decay = {**SCHEDULE, "decay_steps": steps}
        if method == "scratch":  # the same architecture, the held-out data only
            values.update(
                policy={**fields, "domain_id": held.domain_id},
                optimizer={"lr": s.lr_phase1, "vlm_lr_scale": 1.0},
                scheduler={**decay, "warmup_steps": min(100, steps)},
            )
        elif method in ("prompt", "lora"):
            values.update(
                policy={"path": start["model"]},
                new_domain={"id": held.domain_id},
                optimizer={"lr": s.lr_phase2},
                scheduler={"warmup_steps": min(50, steps)},
            )
        else:  # full fine-tuning of everything, the new domain id
            values.update(
                policy={"path": start["model"]},
                new_domain={"id": held.domain_id},
                optimizer={"lr": s.lr_phase1 / 2, "vlm_lr_scale": 1.0},
                scheduler={**decay, "warmup_steps": min(50, steps)},
            )
        result = self.train(name, values)
        return {**result, "base": start["model"] if METHODS[method][2] else None}

    def evaluate(self, key: str, row: dict, run: dict, variant, domain=None, adapter=None) -> dict:
        """Closed-loop success of ``run``'s model on ``variant``; ``row`` labels the result."""
        got = self.stages.run(
            f"eval/{key}/{variant.name}", lambda: self._evaluate(key, run, variant, domain, adapter)
        )
        got = {
            **got,
            **row,
            "variant": variant.name,
            "trainable": run["trainable"],
            "total": run["total"],
            "train_s": run["seconds"],
        }
        self.rows.append(got)
        print(f"{key:34s} {variant.name:18s} {got['successes']}/{got['episodes']}", flush=True)
        return got

    def _evaluate(self, key: str, run: dict, variant, domain, adapter) -> dict:
        from xvla.policy import XVLAPolicy
        from xvla.sim.demo import _eval
        from xvla.sim.report import wilson_interval

        if adapter:  # the adapter file in the Phase I model it was trained on, in whichever slot is free
            policy = XVLAPolicy.from_pretrained(run["base"], tokenizer=self.tokenizer)
            domain = policy.load_adapter(adapter).domain_id
        else:
            policy = XVLAPolicy.from_pretrained(run["model"], tokenizer=self.tokenizer)
        t = time.perf_counter()
        rep = _eval(
            self.s, policy, self.tasks, variant, self.out / "eval" / key / variant.name, domain_id=domain
        )
        o = rep["overall"]
        return {
            "successes": o["successes"],
            "episodes": o["episodes"],
            "per_task": {k: v["successes"] for k, v in rep["per_task"].items()},
            "ci95": list(wilson_interval(o["successes"], o["episodes"])),
            "eval_s": round(time.perf_counter() - t, 1),
            "domain_id": domain,
        }

    def replay(self, key: str, data: Path, variant) -> dict:
        """Each task's first demonstration replayed open loop on the evaluation layouts (see ``_replay``)."""
        got = self.stages.run(f"eval/{key}/{variant.name}", lambda: self._replay(data, variant))
        return {**got, "variant": variant.name, "trainable": 0, "total": 0, "train_s": 0.0}

    def _replay(self, data: Path, variant) -> dict:
        """The success of acting without looking: if one recorded action sequence solves most evaluation
        layouts, the layouts vary too little for learning from more demonstrations to show."""
        from xvla.sim.evaluate import episode_specs
        from xvla.sim.metaworld_env import MetaWorldEnv
        from xvla.sim.report import wilson_interval

        t, plans = time.perf_counter(), first_demonstrations(data)
        per_task = dict.fromkeys(self.tasks, 0)
        for spec in episode_specs(self.tasks, self.s.eval_episodes, seed=1000, videos=0):
            env = MetaWorldEnv(spec.task, variant, image_size=self.s.image_size)
            env.reset(seed=spec.seed)
            per_task[spec.task] += any(env.step(a)[2] for a in plans[spec.task][: self.s.eval_max_steps])
            env.close()
        k, n = sum(per_task.values()), self.s.eval_episodes * len(self.tasks)
        return {"successes": k, "episodes": n, "per_task": per_task, "ci95": list(wilson_interval(k, n)),
                "eval_s": round(time.perf_counter() - t, 1), "domain_id": None}  # fmt: skip


def first_demonstrations(data: Path) -> dict:
    """Task name -> the actions of its first recorded episode in the dataset at ``data``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xvla.data.lerobot_dataset import LeRobotDatasetMeta
    from xvla.sim.instructions import INSTRUCTIONS

    by_text = {text: name for name, text in INSTRUCTIONS.items()}
    task_names = [by_text[text] for text in LeRobotDatasetMeta(data).tasks]
    frames = pa.concat_tables(
        [pq.read_table(f) for f in sorted((data / "data").rglob("*.parquet"))]
    ).to_pylist()
    plans: dict[str, dict] = {}
    for f in sorted(frames, key=lambda f: (f["episode_index"], f["frame_index"])):
        episodes = plans.setdefault(task_names[f["task_index"]], {})
        if not episodes or f["episode_index"] in episodes:
            episodes.setdefault(f["episode_index"], []).append(f["action"])
    return {task: next(iter(episodes.values())) for task, episodes in plans.items()}


# ------------------------------------------------------------------------------------------------ studies
def phase1_study(bench: Bench, args, study: str, variants, steps: int, fields: dict) -> list[dict]:
    """Both Phase I settings for every seed, each evaluated on every one of ``variants``."""
    demos = bench.demos(study, variants, bench.s.episodes_per_task)
    rows = []
    for seed in _ints(args.seeds):
        for shared in (False, True):
            name = f"{study}_{'shared' if shared else 'prompts'}_seed{seed}"
            run = bench.phase1(name, demos, variants, shared, seed, steps, fields)
            row = {"study": study, "setting": "one shared domain" if shared else "soft prompts", "seed": seed}
            domain = variants[0].domain_id if shared else None
            rows += [bench.evaluate(name, row, run, v, domain=domain) for v in variants]
    return rows


def visible_base(bench: Bench, args) -> tuple[dict, list, Any]:
    """The visible study's first-seed soft-prompt Phase I model (the base of every adaptation)."""
    from xvla.sim.variants import get_variant, resolve_variants

    variants, held = resolve_variants(bench.s.train_variants), get_variant(bench.s.heldout_variant)
    demos = bench.demos("visible", variants, bench.s.episodes_per_task)
    seed = _ints(args.seeds)[0]
    fields = bench.fields([*variants, held])  # wide and long enough for the held-out variant too
    run = bench.phase1(
        f"visible_prompts_seed{seed}", demos, variants, False, seed, bench.s.steps_phase1, fields
    )
    return run, variants, held


def adaptation_rows(
    bench: Bench, study: str, base: dict, variants, held, episodes: int, seed: int, steps: int
) -> list[dict]:
    """Every adaptation method on ``episodes`` held-out demonstrations per task."""
    data = bench.demos(f"{held.name}-{episodes}", [held], episodes) / held.name
    fields = bench.fields([*variants, held])
    rows = []
    for method, (label, _, _) in METHODS.items():
        name = f"{study}_{method}_{episodes}demos_seed{seed}"
        run = bench.adapt(name, method, base, data, held, fields, seed, steps)
        row = {"study": study, "setting": label, "method": method, "demos": episodes, "seed": seed}
        rows.append(
            bench.evaluate(name, row, run, held, adapter=run["adapter"] if method == "prompt" else None)
        )
    return rows


def study_hidden(bench: Bench, args) -> str:
    from xvla.sim.variants import resolve_variants

    variants = resolve_variants(args.hidden_variants)
    rows = phase1_study(bench, args, "hidden", variants, args.steps_hidden, bench.fields(variants))
    return hidden_section(bench, args, variants, rows)


def study_visible(bench: Bench, args) -> str:
    from xvla.sim.variants import get_variant, resolve_variants

    variants, held = resolve_variants(bench.s.train_variants), get_variant(bench.s.heldout_variant)
    fields = bench.fields([*variants, held])
    rows = phase1_study(bench, args, "visible", variants, bench.s.steps_phase1, fields)
    base, variants, held = visible_base(bench, args)
    before = {"study": "visible", "setting": "no adaptation", "method": "before", "seed": 0}
    rows.append(bench.evaluate("heldout_before", before, base, held, domain=variants[0].domain_id))
    episodes, steps = bench.s.heldout_episodes_per_task, bench.s.steps_phase2
    rows += adaptation_rows(bench, "visible", base, variants, held, episodes, 0, steps)
    return visible_section(bench, args, variants, held, rows)


def study_fewdemo(bench: Bench, args) -> str:
    base, variants, held = visible_base(bench, args)
    before = {"study": "fewdemo", "setting": "no adaptation", "method": "before", "demos": 0, "seed": 0}
    rows = [bench.evaluate("heldout_before", before, base, held, domain=variants[0].domain_id)]
    for seed in _ints(args.few_seeds):
        for k in _ints(args.few_demos):
            rows += adaptation_rows(bench, "fewdemo", base, variants, held, k, seed, args.steps_fewdemo)
    data = bench.out / "demos" / f"{held.name}-{_ints(args.few_demos)[0]}" / held.name
    replay = {
        "study": "fewdemo",
        "setting": "replay of one demonstration, open loop",
        "method": "replay",
        "seed": 0,
    }
    rows.append({**bench.replay("replay_first_demo", data, held), **replay, "demos": 1})
    bench.rows.append(rows[-1])
    return fewdemo_section(bench, args, variants, held, rows)


def study_replay(bench: Bench, args) -> str:
    """Per task, one demonstration on the held-out variant replayed open loop on the evaluation layouts."""
    from xvla.sim.variants import get_variant

    held = get_variant(bench.s.heldout_variant)
    data = bench.demos(f"{held.name}-1", [held], 1) / held.name
    row = {"study": "replay", "setting": "replay of one demonstration, open loop", "seed": 0}
    got = {**bench.replay("replay_first_demo", data, held), **row}
    bench.rows.append(got)
    s = bench.s
    lines = [
        f"- Held-out `{held.name}`: one scripted demonstration per task, its actions replayed without looking "
        f"on {s.eval_episodes} evaluation layouts per task (seed 1000), at most {s.eval_max_steps} actions; "
        "95% Wilson intervals.",
        "",
        f"Command: `{command(args, 'replay')}`",
        "",
        "| task | open-loop replay of one demonstration | 95% CI |",
        "|---|---|---|",
    ]
    n = bench.s.eval_episodes
    lines += [f"| {task.removesuffix('-v3')} | {_rate(k, n)} |" for task, k in got["per_task"].items()]
    return "\n".join(lines)


STUDY_FUNCTIONS = {
    "hidden": study_hidden,
    "fewdemo": study_fewdemo,
    "visible": study_visible,
    "replay": study_replay,
}


# ------------------------------------------------------------------------------------------------ report
def _rate(k: int, n: int) -> str:
    from xvla.sim.report import wilson_interval

    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} ({100 * k / max(n, 1):.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}%"


def _per_task(row: dict) -> str:
    return ", ".join(f"{t.removesuffix('-v3')} {k}" for t, k in row["per_task"].items())


def _scale(bench: Bench, args) -> str:
    s = bench.s
    lines = [
        f"- Tasks: {', '.join(bench.tasks)}; {s.episodes_per_task} Phase I demonstrations per task and variant.",
        f"- Model: tiny Florence-2 width {s.vlm_width} from scratch, transformer hidden {s.hidden_size} depth "
        f"{s.depth}, images {s.image_size} px, batch {s.batch_size}, fp32 eager.",
        f"- Evaluation: {s.eval_episodes} episodes per task (layouts of seed 1000, unseen in training), at most "
        f"{s.eval_max_steps} actions; 95% Wilson intervals.",
    ]
    if args.quick:
        lines.insert(0, "**QUICK SCALE (`--quick`): a pipeline check with tiny settings, not evidence.**\n")
    return "\n".join(lines)


def phase1_tables(rows: list[dict]) -> list[str]:
    lines = ["| setting | seed | variant | success | 95% CI | per task |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['setting']} | {r['seed']} | `{r['variant']}` | {_rate(r['successes'], r['episodes'])} | "
        f"{_per_task(r)} |"
        for r in rows
    ]
    lines += [
        "",
        "Pooled over the variants:",
        "",
        "| setting | seeds | success | 95% CI |",
        "|---|---|---|---|",
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        for seed in [*dict.fromkeys(r["seed"] for r in rows), "all"]:
            got = [r for r in rows if r["setting"] == setting and seed in (r["seed"], "all")]
            k, n = sum(r["successes"] for r in got), sum(r["episodes"] for r in got)
            lines.append(f"| {setting} | {seed} | {_rate(k, n)} |")
    return lines


def hidden_section(bench: Bench, args, variants, rows: list[dict]) -> str:
    runs = [d for key, d in bench.stages.data["done"].items() if key.startswith("train/hidden_")]
    lines = [
        _scale(bench, args),
        "- Variants (each rendered exactly as `sawyer`): "
        + "; ".join(f"`{v.name}` ({v.description})" for v in variants)
        + ".",
        f"- Phase I: {args.steps_hidden} steps, seeds {args.seeds}; {runs[0]['trainable']:,} parameters."
        if runs
        else "",
        "",
        f"Command: `{command(args, 'hidden')}`",
        "",
        *phase1_tables(rows),
    ]
    return "\n".join(lines)


def visible_section(bench: Bench, args, variants, held, rows: list[dict]) -> str:
    phase1 = [r for r in rows if "method" not in r]
    adapt = [r for r in rows if "method" in r]
    lines = [
        _scale(bench, args),
        f"- Phase I variants: {', '.join(f'`{v.name}`' for v in variants)}, {bench.s.steps_phase1} steps, "
        f"seeds {args.seeds}; held-out `{held.name}`: {bench.s.heldout_episodes_per_task} demonstrations per "
        f"task, {bench.s.steps_phase2} adaptation steps.",
        "",
        f"Command: `{command(args, 'visible')}`",
        "",
        *phase1_tables(phase1),
        "",
        "Adaptation to the held-out variant, from the first seed's soft-prompt model:",
        "",
        *adaptation_table(adapt),
    ]
    return "\n".join(lines)


def adaptation_table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | demos per task | seed | success | 95% CI | per task | trainable / total | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r.get('demos', '-')} | {r['seed']} | {_rate(r['successes'], r['episodes'])} | "
        f"{_per_task(r)} | {_params(r)} | {r['train_s']:.0f} |"
        for r in rows
    ]
    return lines


def command(args, study: str) -> str:
    """The command that reproduces ``study``'s section: the flags given, less where the files went."""
    flags, skip = [], False
    for item in args.argv:
        name = item.split("=", 1)[0]
        if skip or name in ("--study", "--output", "--doc", "--no-progress"):
            skip = not skip and "=" not in item and name in ("--study", "--output", "--doc")
            continue
        flags.append(item)
    return " ".join(["python benchmarks/metaworld_xembodiment.py", "--study", study, *flags])


def _params(row: dict) -> str:
    return f"{row['trainable']:,} / {row['total']:,}" if row["total"] else "-"


def fewdemo_section(bench: Bench, args, variants, held, rows: list[dict]) -> str:
    plot = Path(args.doc).with_name(
        f"{Path(args.doc).stem}_fewdemo{'_' + args.label if args.label else ''}.svg"
    )
    success_plot(rows, plot)
    lines = [
        _scale(bench, args),
        f"- Base: the visible study's soft-prompt Phase I model ({', '.join(f'`{v.name}`' for v in variants)}, "
        f"{bench.s.steps_phase1} steps, seed {_ints(args.seeds)[0]}); held-out `{held.name}` "
        f"({held.description}).",
        f"- Each method trains {args.steps_fewdemo} steps on {args.few_demos.replace(',', ', ')} demonstrations per task, seeds "
        f"{args.few_seeds}; 'from scratch' is the same architecture on the held-out data only.",
        "",
        f"Command: `{command(args, 'fewdemo')}`",
        "",
        *adaptation_table(rows),
        "",
        f"![success against demonstrations per method]({plot.name})",
    ]
    return "\n".join(lines)


def success_plot(rows: list[dict], path: Path) -> None:
    """Success rate (95% Wilson interval) against demonstrations per task, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xvla.sim.report import wilson_interval

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, (label, _, _) in METHODS.items():
        got = sorted((r for r in rows if r.get("method") == method), key=lambda r: r["demos"])
        if not got:
            continue
        xs = sorted({r["demos"] for r in got})
        k = [sum(r["successes"] for r in got if r["demos"] == x) for x in xs]
        n = [sum(r["episodes"] for r in got if r["demos"] == x) for x in xs]
        rate = [100 * a / b for a, b in zip(k, n, strict=True)]
        ci = [wilson_interval(a, b) for a, b in zip(k, n, strict=True)]
        err = [
            [r - 100 * lo for r, (lo, _) in zip(rate, ci, strict=True)],
            [100 * hi - r for r, (_, hi) in zip(rate, ci, strict=True)],
        ]
        ax.errorbar(xs, rate, yerr=err, marker="o", capsize=3, label=label)
    for r in (r for r in rows if r.get("method") == "replay"):
        rate = 100 * r["successes"] / r["episodes"]
        ax.axhline(rate, linestyle="--", color="gray", label=r["setting"])
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["demos"] for r in rows if r.get("demos")}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="demonstrations per task", ylabel="success (%)", ylim=(-3, 103))
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.svg")
    fig.savefig(tmp, metadata={"Date": None})
    plt.close(fig)
    os.replace(tmp, path)


def write_sections(doc: Path, sections: dict[str, str]) -> None:
    """Replace each study's marked section in ``doc`` (appended when absent); the rest stays as written."""
    text = doc.read_text() if doc.is_file() else "# Soft prompts across embodiments (Meta-World variants)\n"
    for study, body in sections.items():
        start, end = f"<!-- study:{study} -->", f"<!-- /study:{study} -->"
        block = f"{start}\n{body}\n{end}"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)


if __name__ == "__main__":
    raise SystemExit(main())
