"""``xvla eval-offline``: per-dimension action error of a checkpoint on a (held-out) LeRobot dataset.

For every selected episode the policy predicts an action chunk at frames 0, stride, 2*stride, ...;
the chunk is compared with the recorded actions of the same frames (padding past the episode end is
left out). Writes to ``output``::

    metrics.json      per dimension: MAE, RMSE (over all chunk steps and over the first step); overall
    metrics.md        the same as a markdown table
    plots/episode_<e>_dim_<d>.png   predicted (first n steps of each chunk) vs. recorded trajectory

No simulator is needed: this measures imitation error, not task success (see ``xvla eval``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..domains import dataset_domain, resolve_domain
from ..flags import add_dataclass_flags, dataclass_from_args
from ..processor import rename_keys
from ..utils import write_json

logger = logging.getLogger(__name__)


@dataclass
class OfflineEvalConfig:
    policy: str = field(metadata={"help": "checkpoint folder or Hub id"})
    dataset: str = field(metadata={"help": "LeRobot dataset folder or Hub id"})
    output: str = field(
        default="outputs/eval_offline", metadata={"help": "results folder (metrics JSON and plots)"}
    )
    episodes: str | list[int] | None = field(
        default=None, metadata={"help": "e.g. 15-19 or 3,7,9 (default: all)"}
    )
    stride: int | None = field(
        default=None, metadata={"help": "frames between predictions (default: n_action_steps)"}
    )
    domain_id: int | None = field(
        default=None, metadata={"help": "default: the domain the checkpoint trained for this dataset"}
    )
    key_map: dict[str, str] = field(
        default_factory=dict, metadata={"help": "model key=dataset key pairs, comma-separated"}
    )
    plot_episodes: int = field(default=3, metadata={"help": "episodes to plot"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    seed: int = field(default=0, metadata={"help": "seed of the flow-matching noise"})
    batch_size: int = field(default=16, metadata={"help": "predictions per policy call"})

    def __post_init__(self) -> None:
        if isinstance(self.episodes, str):
            self.episodes = _episodes(self.episodes)


def evaluate_offline(config: OfflineEvalConfig, policy: Any = None, tokenizer: Any = None) -> dict[str, Any]:
    """Predict chunks along the recorded episodes and report the action error (see the module docstring)."""
    from ..policy import XVLAPolicy

    if policy is None:
        policy = XVLAPolicy.from_pretrained(config.policy, device=config.device, tokenizer=tokenizer)
    pcfg = policy.config
    root, ds, key, action_key = _open_dataset(config, pcfg)
    domain, why = resolve_domain(
        pcfg, config.domain_id, dataset_domain(root), f"dataset {root.name!r}", root.name
    )
    logger.info("domain %d: %s", domain, why)
    stride = config.stride or pcfg.n_action_steps
    width = int(math.prod(ds.meta.features[action_key]["shape"]))
    queries = _queries(ds, stride)
    pred, target, pad = _predict_along(policy, ds, queries, key, domain, config, action_key)
    if pred.shape[-1] < width:
        raise ValueError(
            f"the policy predicts {pred.shape[-1]} action dims but the dataset's {action_key!r} has {width}"
        )
    report = {
        "settings": {
            **asdict(config),
            "dataset_root": str(root),
            "domain_id": int(domain),
            "domain_reason": why,
            "stride": stride,
            "chunk_size": pcfg.chunk_size,
        },
        "predictions": len(queries),
        "episodes": [int(e) for e in ds.episodes],
        **_action_errors(pred, target, ~pad, width),
    }
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = _plots(out / "plots", ds, queries, pred, target, stride, width, config.plot_episodes)
    write_json((out / "metrics.json"), report)
    (out / "metrics.md").write_text(markdown(report))
    return report


def _open_dataset(config: OfflineEvalConfig, pcfg: Any) -> tuple[Path, Any, dict[str, str], str]:
    """(root, dataset, key map, action key): the dataset opened with the checkpoint's cameras under their
    dataset names, and the key map completed with every renamed camera."""
    from ..data import LeRobotDataset, resolve_dataset_root

    root = resolve_dataset_root(config.dataset)
    key = dict(config.key_map)
    action_key = key.get("action", "action")
    model_cams = list(pcfg.image_keys or [])
    cams = [key.get(c, c) for c in model_cams]
    known = {*model_cams, "observation.state", "action"}
    unknown = sorted(set(config.key_map) - known) if model_cams else []
    if unknown:
        raise ValueError(
            f"--key-map names model keys {unknown} that this checkpoint does not have; its keys are "
            f"{sorted(known)} (a key map goes model key=dataset key)"
        )
    ds = LeRobotDataset(
        root,
        chunk_size=pcfg.chunk_size,
        episodes=config.episodes,
        action_key=action_key,
        camera_keys=cams or None,
    )
    if not model_cams:
        model_cams = cams = list(ds.camera_keys)
    key.update({m: c for m, c in zip(model_cams, cams, strict=True) if m != c})
    return root, ds, key, action_key


def _queries(ds: Any, stride: int) -> list[tuple[int, int]]:
    """(episode slot, frame index) of every prediction: every ``stride`` frames from each episode's start."""
    queries = []
    for slot in range(len(ds.episodes)):
        start, stop = ds.episode_range(slot)
        queries += [(slot, start + f) for f in range(0, stop - start, stride)]
    return queries


def _action_errors(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, width: int) -> dict[str, Any]:
    """Per-dimension and overall MAE / RMSE over the recorded (not padded) chunk steps."""
    err = pred - target
    per_dim = []
    for d in range(width):
        e_all = err[..., d][valid]
        e_first = err[:, 0, d]
        per_dim.append(
            {
                "dim": d,
                "mae": float(np.abs(e_all).mean()),
                "rmse": float(np.sqrt((e_all**2).mean())),
                "mae_first_step": float(np.abs(e_first).mean()),
                "target_std": float(target[..., d][valid].std()),
            }
        )
    e = err[valid]
    return {
        "per_dim": per_dim,
        "overall": {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt((e**2).mean()))},
    }


def _predict_along(policy, ds, queries, key_map, domain, config, action_key) -> tuple[np.ndarray, ...]:
    """(predicted, recorded, padding) chunks at every query; each sample goes through the policy's processor."""
    import torch

    gen = torch.Generator().manual_seed(config.seed)
    width = int(math.prod(ds.meta.features[action_key]["shape"]))
    preds, targets, pads = [], [], []
    for i in range(0, len(queries), config.batch_size):
        items = [ds[idx] for _, idx in queries[i : i + config.batch_size]]
        samples = [{**rename_keys(it, key_map, "dataset"), "domain_id": int(domain)} for it in items]
        for sample in samples:
            sample.pop("action", None)  # the recorded chunk is the target, not an input
        preds.append(policy.predict_action_chunk(samples, generator=gen).cpu().numpy()[..., :width])
        targets.append(np.stack([np.asarray(it[action_key], np.float32) for it in items]))
        pads.append(np.stack([np.asarray(it[f"{action_key}_is_pad"], bool) for it in items]))
    return np.concatenate(preds), np.concatenate(targets), np.concatenate(pads)


def _plots(folder: Path, ds, queries, pred, target, stride: int, width: int, episodes: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for slot in range(min(episodes, len(ds.episodes))):
        start, stop = ds.episode_range(slot)
        rows = [i for i, (s, _) in enumerate(queries) if s == slot]
        recorded = _recorded(ds, slot)[:, :width]
        for d in range(width):
            fig, ax = plt.subplots(figsize=(7, 2.6))
            ax.plot(np.arange(len(recorded)), recorded[:, d], color="black", linewidth=1.5, label="recorded")
            for n, i in enumerate(rows):
                f0 = queries[i][1] - start
                steps = min(pred.shape[1], len(recorded) - f0)
                ax.plot(
                    np.arange(f0, f0 + steps),
                    pred[i, :steps, d],
                    color="tab:orange",
                    linewidth=0.8,
                    alpha=0.7,
                    label="predicted chunks" if n == 0 else None,
                )
                ax.scatter([f0], [pred[i, 0, d]], color="tab:orange", s=6)
            ax.set_xlabel("frame")
            ax.set_ylabel(f"action[{d}]")
            ax.set_title(
                f"episode {ds.episodes[slot]}, action dim {d} (chunks every {stride} frames)", fontsize=9
            )
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"episode_{ds.episodes[slot]}_dim_{d}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(str(path.relative_to(folder.parent)))
    return paths


def _recorded(ds, slot: int) -> np.ndarray:
    """The recorded actions of the ``slot``-th selected episode, [length, width]."""
    actions = ds.episode_column(slot, ds.action_key).astype(np.float32)
    return actions.reshape(len(actions), -1)


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"# Offline evaluation: {s['policy']} on {s['dataset']}",
        "",
        f"{report['predictions']} chunk predictions (every {s['stride']} frames, chunk {s['chunk_size']}) on "
        f"episodes {report['episodes'][:10]}{' ...' if len(report['episodes']) > 10 else ''}; domain {s['domain_id']}.",
        "",
        "| action dim | MAE | RMSE | MAE (first step) | recorded std |",
        "|---|---|---|---|---|",
    ]
    for r in report["per_dim"]:
        lines.append(
            f"| {r['dim']} | {r['mae']:.4f} | {r['rmse']:.4f} | {r['mae_first_step']:.4f} | {r['target_std']:.4f} |"
        )
    o = report["overall"]
    lines.append(f"| **all** | {o['mae']:.4f} | {o['rmse']:.4f} | | |")
    return "\n".join(lines) + "\n"


def _episodes(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b or a) + 1))
    except ValueError:
        raise ValueError(
            f"--episodes {text!r} is invalid: give episode indices like 15-19 or 3,7,9"
        ) from None
    return out


def cmd_eval_offline(args) -> int:
    config = dataclass_from_args(OfflineEvalConfig, args)
    report = evaluate_offline(config)
    print(markdown(report))
    out = config.output
    print(f"results: {out}/metrics.json, {out}/metrics.md, {len(report['plots'])} plots in {out}/plots")
    return 0


def register_eval_offline(sub) -> None:
    p = sub.add_parser(
        "eval-offline",
        help="per-dimension action error of a checkpoint on a held-out dataset split, with trajectory plots",
        description="Predict action chunks along recorded episodes and compare them with the recorded actions: "
        "MAE / RMSE per action dimension (JSON + markdown) and predicted-vs-recorded plots.",
    )
    add_dataclass_flags(p, OfflineEvalConfig, positional=("policy", "dataset"), aliases={"output": ["-o"]})
    p.set_defaults(func=cmd_eval_offline)
