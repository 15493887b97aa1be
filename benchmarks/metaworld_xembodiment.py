"""The soft-prompt claim of X-VLA at small scale, on Meta-World embodiment variants (~1.7 h on 2 CPU cores).

Phase I on K training variants, for each of ``--seeds``:
  * `prompts`: every variant has its own domain id (soft prompt + domain-aware action heads);
  * `shared`:  every variant uses one shared domain id (no per-embodiment parameters).
Each is evaluated closed loop on the training variants. Then, from the first seed's `prompts` model,
adaptation to a held-out variant with few demonstrations:
  * `before`:       no adaptation (the first training variant's prompt and heads);
  * `prompts-only`: the `prompt` recipe (only the new domain's soft prompt and action-head rows train);
                    evaluated from its adapter file loaded into the Phase I model (a free domain slot);
  * `lora`:         the `lora` recipe (r=8 LoRA on every linear layer + the new domain's rows);
  * `full`:         full fine-tuning (every parameter, the new domain id);
  * `scratch`:      the same architecture trained from scratch on the held-out demonstrations only,
                    for as many steps as the adaptations.
Success rates with 95% Wilson intervals, trainable-parameter counts and wall-clock go to a
markdown file (default `docs/xembodiment.md`) and a JSON next to the runs.

Resumable: every finished stage (demonstrations, each training run, each evaluation) is recorded in
``OUTPUT/stages.json`` and skipped when the script is run again with the same settings; a training run
interrupted mid-way resumes from its last checkpoint (every ``--save-every`` steps).

    python benchmarks/metaworld_xembodiment.py                 # the full run
    python benchmarks/metaworld_xembodiment.py --quick         # a few minutes: checks the pipeline only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="outputs/bench_xembodiment")
    p.add_argument("--doc", default="docs/xembodiment.md", help="markdown results file")
    p.add_argument("--tasks", default="button-press-topdown,drawer-close")
    p.add_argument("--train-variants", default="sawyer,sawyer-rot90,sawyer-joint7")
    p.add_argument("--heldout-variant", default="sawyer-topdown")
    p.add_argument(
        "--episodes-per-task", type=int, default=30, help="Phase I demonstrations per task and variant"
    )
    p.add_argument(
        "--heldout-episodes-per-task", type=int, default=10, help="few demonstrations for adaptation"
    )
    p.add_argument("--steps-phase1", type=int, default=1100)
    p.add_argument("--steps-phase2", type=int, default=300)
    p.add_argument("--eval-episodes", type=int, default=15, help="per task and variant")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--seeds", default="0,1", help="Phase I seeds (both Phase I rows are trained once per seed)"
    )
    p.add_argument(
        "--save-every", type=int, default=300, help="checkpoint interval of the training runs (resume)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline in a few minutes")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def settings(args: argparse.Namespace):
    from xvla.sim.demo import DemoSettings

    s = DemoSettings(
        output=args.output, tasks=args.tasks, train_variants=args.train_variants,
        heldout_variant=args.heldout_variant, episodes_per_task=args.episodes_per_task,
        heldout_episodes_per_task=args.heldout_episodes_per_task, steps_phase1=args.steps_phase1,
        steps_phase2=args.steps_phase2, eval_episodes=args.eval_episodes, image_size=args.image_size,
        batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress, threads=args.threads,
    )  # fmt: skip
    if args.quick:
        s = replace(s, tasks="drawer-close", train_variants="sawyer,sawyer-rot90", heldout_variant="sawyer-topdown",
                    episodes_per_task=6, heldout_episodes_per_task=3, steps_phase1=120, steps_phase2=60,
                    eval_episodes=3, image_size=32, batch_size=16, vlm_width=24, hidden_size=48, depth=2,
                    eval_max_steps=60)  # fmt: skip
    s.validate()
    return s


class Stages:
    """Finished stages and their results in ``OUTPUT/stages.json``; a re-run skips them."""

    def __init__(self, out: Path, fingerprint: dict):
        from xvla.utils import write_json

        self._write = write_json
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
        self._write(self.path, self.data)
        return value


def main(argv=None) -> int:
    import torch

    from xvla.sim.demo import build_tokenizer, model_fields
    from xvla.sim.instructions import INSTRUCTIONS, resolve_tasks
    from xvla.sim.variants import get_variant, resolve_variants
    from xvla.utils import keep_freed_memory

    keep_freed_memory()  # as the `xvla` commands do
    args = parse_args(argv)
    s = settings(args)
    torch.set_num_threads(s.threads)
    seeds = [int(x) for x in args.seeds.split(",")] if not args.quick else [0]
    out = Path(s.output)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, {**asdict(s), "seeds": seeds, "quick": args.quick})
    tasks = resolve_tasks(s.tasks)
    train_vs, held = resolve_variants(s.train_variants), get_variant(s.heldout_variant)
    demos = out / "demos"
    stages.run("demos", lambda: _demos(s, demos, tasks, train_vs, held))
    tokenizer = build_tokenizer(sorted(set(INSTRUCTIONS.values())))
    ids = [v.domain_id for v in [*train_vs, held]]
    width = max(v.action.action_dim for v in [*train_vs, held])
    fields = model_fields(s, max(ids) + 1, width, train_vs[0].domain_id)
    runner = Runner(s, out, demos, fields, tokenizer, args.save_every, train_vs, held, stages, tasks)
    runner.phase1_rows(seeds[0])
    # The adaptations start from the first seed's model: run them before the other seeds' Phase I.
    runner.adaptation_rows(stages.data["done"][f"train/phase1_prompts_seed{seeds[0]}"])
    for seed in seeds[1:]:
        runner.phase1_rows(seed)

    done = stages.data["done"].values()
    result = {"quick": args.quick, "settings": stages.data["settings"], "demos": stages.data["done"]["demos"],
              "stage_s": round(sum(d.get("seconds", 0) + d.get("eval_s", 0) for d in done), 1),
              "rows": sorted(runner.rows, key=lambda r: not r["setting"].startswith("Phase I")),
              "adapter_bytes": _size(out),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
                         f"{torch.get_num_threads()}"}  # fmt: skip
    stages._write(out / "results.json", result)
    text = markdown(result, tasks, train_vs, held)
    Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
    Path(args.doc).write_text(text)
    print(text)
    return 0


def _size(out: Path) -> int | None:
    path = out / "adapt_prompt" / "adapter.safetensors"
    return path.stat().st_size if path.is_file() else None


def _demos(s, demos: Path, tasks, train_vs, held) -> dict:
    from xvla.sim.gen_demos import DemoConfig, generate_demonstrations

    t = time.perf_counter()
    common = dict(output=str(demos), tasks=tasks, seed=0, workers=s.workers, image_size=s.image_size,
                  overwrite=True, progress=s.progress)  # fmt: skip
    generate_demonstrations(DemoConfig(variants=train_vs, episodes_per_task=s.episodes_per_task, **common))
    generate_demonstrations(
        DemoConfig(variants=[held], episodes_per_task=s.heldout_episodes_per_task, **common)
    )
    return {"seconds": round(time.perf_counter() - t, 1)}


class Runner:
    """The training runs and evaluations of the benchmark (each a stage)."""

    def __init__(self, s, out: Path, demos: Path, fields: dict, tokenizer, save_every: int, train_vs, held,
                 stages: Stages, tasks: list[str]):  # fmt: skip
        self.s, self.out, self.demos, self.fields, self.tokenizer = s, out, demos, fields, tokenizer
        self.save_every, self.train_vs, self.held, self.stages, self.tasks = (
            save_every,
            train_vs,
            held,
            stages,
            tasks,
        )
        self.rows: list[dict] = []

    def phase1_rows(self, seed: int) -> None:
        """Both Phase I models of one seed, each evaluated on every training variant."""
        first = self.train_vs[0].domain_id
        for shared in (False, True):
            name = f"phase1_{'shared' if shared else 'prompts'}_seed{seed}"
            run = self.stages.run(f"train/{name}", lambda n=name, sh=shared: self.phase1(n, sh, seed))
            label = f"Phase I, {'one shared domain' if shared else 'soft prompts'} (seed {seed})"
            self.evaluate_stage(name, label, run, self.train_vs, domain=first if shared else None)

    def adaptation_rows(self, start: dict) -> None:
        """The held-out variant: no adaptation, then each adaptation recipe (all but scratch from ``start``)."""
        held = self.held
        self.evaluate_stage(
            "before", "held-out, no adaptation", start, [held], domain=self.train_vs[0].domain_id
        )
        for key, label, recipe, src in (("prompt", "adapt: prompts only (adapter file)", "prompt", start),
                                        ("lora", "adapt: LoRA r=8 + prompts", "lora", start),
                                        ("full", "adapt: full fine-tuning", "lerobot", start),
                                        ("scratch", "adapt: from scratch", "lerobot", None)):  # fmt: skip
            run = self.stages.run(
                f"train/adapt_{key}", lambda k=key, r=recipe, sr=src: self.adapt(f"adapt_{k}", r, sr)
            )
            adapter = run["adapter"] if key == "prompt" else None
            self.evaluate_stage(f"adapt_{key}", label, run, [held], adapter=adapter)

    def evaluate_stage(self, key: str, label: str, run: dict, variants, domain=None, adapter=None) -> None:
        for v in variants:
            row = self.stages.run(f"eval/{key}/{v.name}",
                                  lambda v=v: self.evaluate(label, run, v, self.tasks, domain, adapter))  # fmt: skip
            self.rows.append(row)
            print(f"{label:34s} {v.name:16s} {row['successes']}/{row['episodes']}", flush=True)

    def _train(self, name: str, values: dict) -> dict:
        from xvla.sim.demo import _last_loss, _train, _trainable
        from xvla.train import state as st

        out_dir = self.out / name
        resume = st.latest_checkpoint(out_dir) is not None
        if out_dir.exists() and not resume:
            _fresh(out_dir)
        base = dict(batch_size=self.s.batch_size, num_workers=0, log_freq=25, tensorboard=False, device="cpu",
                    keep_last=1, output_dir=str(out_dir), resume=resume, mixture={"cache_frames": True},
                    save_freq=min(self.save_every, values["steps"]))  # fmt: skip
        result, seconds = _train({**base, **values}, self.tokenizer)
        trainable, total = _trainable(result)
        adapter = out_dir / "adapter.safetensors"
        return {"model": str(result.final_model_dir), "seconds": round(seconds, 1), "resumed": resume,
                "trainable": trainable, "total": total, "final_loss": _last_loss(result),
                "adapter": str(adapter) if adapter.is_file() else None}  # fmt: skip

    def phase1(self, name: str, shared: bool, seed: int) -> dict:
        s, first = self.s, self.train_vs[0].domain_id
        mix = [
            {"root": str(self.demos / v.name), "domain_id": first if shared else v.domain_id}
            for v in self.train_vs
        ]
        return self._train(name, {
            "recipe": "lerobot", "policy": self.fields, "steps": s.steps_phase1, "seed": seed,
            "mixture": {"datasets": mix, "cache_frames": True}, "optimizer": {"lr": s.lr_phase1, "vlm_lr_scale": 1.0},
            "scheduler": {**SCHEDULE, "warmup_steps": min(100, s.steps_phase1), "decay_steps": s.steps_phase1},
        })  # fmt: skip

    def adapt(self, name: str, recipe: str, start: dict | None) -> dict:
        s, held = self.s, self.held
        values: dict[str, Any] = {"recipe": recipe, "steps": s.steps_phase2, "seed": 0,
                                  "dataset": {"root": str(self.demos / held.name), "domain_id": held.domain_id}}  # fmt: skip
        decay = {**SCHEDULE, "decay_steps": s.steps_phase2}
        if start is None:  # from scratch: the same architecture, the held-out data only
            values.update(policy={**self.fields, "domain_id": held.domain_id},
                          optimizer={"lr": s.lr_phase1, "vlm_lr_scale": 1.0},
                          scheduler={**decay, "warmup_steps": min(100, s.steps_phase2)})  # fmt: skip
        elif recipe in ("prompt", "lora"):
            values.update(policy={"path": start["model"]}, new_domain={"id": held.domain_id},
                          optimizer={"lr": s.lr_phase2}, scheduler={"warmup_steps": min(50, s.steps_phase2)})  # fmt: skip
        else:  # full fine-tuning of everything, the new domain id
            values.update(policy={"path": start["model"]}, new_domain={"id": held.domain_id},
                          optimizer={"lr": s.lr_phase1 / 2, "vlm_lr_scale": 1.0},
                          scheduler={**decay, "warmup_steps": min(50, s.steps_phase2)})  # fmt: skip
        result = self._train(name, values)
        result["base"] = start["model"] if start else None
        return result

    def evaluate(self, label: str, run: dict, variant, tasks, domain=None, adapter=None) -> dict:
        from xvla.policy import XVLAPolicy
        from xvla.sim.demo import _eval
        from xvla.sim.report import wilson_interval

        if adapter:  # the adapter file in the Phase I model it was trained on, in whichever slot is free
            policy = XVLAPolicy.from_pretrained(run["base"], tokenizer=self.tokenizer)
            domain = policy.load_adapter(adapter).domain_id
        else:
            policy = XVLAPolicy.from_pretrained(run["model"], tokenizer=self.tokenizer)
        t = time.perf_counter()
        rep = _eval(self.s, policy, tasks, variant, self.out / "eval" / f"{label}_{variant.name}".replace(" ", "_"),
                    domain_id=domain)  # fmt: skip
        o = rep["overall"]
        return {"setting": label, "variant": variant.name, "successes": o["successes"], "episodes": o["episodes"],
                "per_task": {k: v["successes"] for k, v in rep["per_task"].items()},
                "ci95": list(wilson_interval(o["successes"], o["episodes"])), "trainable": run["trainable"],
                "total": run["total"], "train_s": run["seconds"], "eval_s": round(time.perf_counter() - t, 1),
                "domain_id": domain}  # fmt: skip


SCHEDULE = dict(auto_scale=False, min_lr_ratio=0.1)


def _fresh(path: Path) -> Path:
    import shutil

    if path.exists():
        shutil.rmtree(path)
    return path


def markdown(result: dict, tasks, train_vs, held) -> str:
    s = result["settings"]
    scale = ("**QUICK SCALE (`--quick`): a pipeline check with tiny settings, not evidence for or against the "
             "claim.**" if result["quick"] else "Full scale (the script's defaults).")  # fmt: skip
    size = result.get("adapter_bytes")
    lines = [
        "# Soft prompts across embodiments, at small scale (Meta-World variants)",
        "",
        "`benchmarks/metaworld_xembodiment.py`: X-VLA's claim that per-embodiment soft prompts let one model "
        "absorb heterogeneous robots, and that a new robot can be added by training only its prompt, tested on "
        "Meta-World embodiment variants (different cameras, action frames, widths and gripper conventions).",
        "",
        scale,
        "",
        f"- Tasks: {', '.join(tasks)}; Phase I variants: {', '.join(v.name for v in train_vs)} "
        f"({s['episodes_per_task']} demonstrations per task each); held-out: `{held.name}` "
        f"({s['heldout_episodes_per_task']} demonstrations per task).",
        f"- Model: tiny Florence-2 width {s['vlm_width']} from scratch, transformer hidden {s['hidden_size']} depth "
        f"{s['depth']}, images {s['image_size']} px; Phase I {s['steps_phase1']} steps (seeds {s['seeds']}), "
        f"adaptation {s['steps_phase2']} steps, batch {s['batch_size']}, fp32 eager.",
        f"- Evaluation: {s['eval_episodes']} episodes per task (layouts of seed 1000, unseen in training), at most "
        f"{s['eval_max_steps']} actions; 95% Wilson intervals.",
        f"- Machine: {result['machine']}; wall-clock of all stages {result['stage_s'] / 60:.1f} min "
        f"(demonstrations {result['demos']['seconds']:.0f} s; training and evaluation the rest)."
        + (f" The prompt-only adapter file is {size / 1024:.1f} KiB." if size else ""),
        "",
        "| setting | variant | success | 95% CI | per task | trainable / total parameters | train wall-clock |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lo, hi = r["ci95"]
        per = ", ".join(f"{t.removesuffix('-v3')} {k}" for t, k in r["per_task"].items())
        lines.append(
            f"| {r['setting']} | `{r['variant']}` | {r['successes']}/{r['episodes']} "
            f"({100 * r['successes'] / max(r['episodes'], 1):.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% | {per} | "
            f"{r['trainable']:,} / {r['total']:,} | {r['train_s']:.0f} s |"
        )
    lines += ["", "Pooled over the training variants:", "", *pooled_table(result["rows"])]
    lines += [
        "",
        "'One shared domain' trains every variant under a single domain id (one soft prompt, one set of action "
        "heads); 'soft prompts' gives each variant its own. The adaptation rows all start from the first seed's "
        "soft-prompt Phase I model except 'from scratch' (same architecture, held-out demonstrations only, same "
        "step count). 'No adaptation' runs that model on the held-out variant with the first training "
        "variant's prompt. The prompt-only row is evaluated from its adapter file loaded into the Phase I "
        "model (`policy.load_adapter`, a free domain slot), not from the run's own checkpoint.",
        "",
    ]
    return "\n".join(lines)


def pooled_table(rows: list[dict]) -> list[str]:
    """Phase I rows pooled over the training variants, per setting and seed."""
    from xvla.sim.report import wilson_interval

    lines = ["| Phase I setting | success | 95% CI |", "|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in rows if r["setting"].startswith("Phase I")):
        got = [r for r in rows if r["setting"] == setting]
        k, n = sum(r["successes"] for r in got), sum(r["episodes"] for r in got)
        lo, hi = wilson_interval(k, n)
        lines.append(f"| {setting} | {k}/{n} ({100 * k / max(n, 1):.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
