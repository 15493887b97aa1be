"""`xvla demo` end to end at a micro scale, and `xvla eval-offline` on a tiny dataset + checkpoint."""

from __future__ import annotations

import json

import pytest


def micro_settings(tmp_path, **overrides):
    from xvla.sim.demo import DemoSettings

    base = dict(
        output=str(tmp_path / "demo"),
        tasks="reach",
        train_variants="sawyer,sawyer-rot90",
        heldout_variant="sawyer-joint7",
        episodes_per_task=2,
        steps_phase1=3,
        steps_phase2=3,
        eval_episodes=1,
        image_size=32,
        workers=1,
        batch_size=4,
        eval_max_steps=12,
        vlm_width=24,
        hidden_size=32,
        depth=1,
        chunk_size=4,
        n_action_steps=2,
        denoising_steps=2,
        progress=False,
    )
    base.update(overrides)
    return DemoSettings(**base)


def test_demo_pipeline_micro(metaworld, tmp_path):
    from xvla.sim.demo import run_demo

    info = run_demo(micro_settings(tmp_path))
    report = tmp_path / "demo" / "report"
    for name in ("README.md", "results.json", "success.png", "loss_phase1.png", "loss_phase2.png"):
        assert (report / name).is_file(), name
    assert len(list(report.glob("rollout_*.mp4"))) == 2
    stages = [(r["stage"], r["variant"]) for r in info["rows"]]
    assert stages == [
        ("phase1", "sawyer"),
        ("phase1", "sawyer-rot90"),
        ("before", "sawyer-joint7"),
        ("after", "sawyer-joint7"),
    ]
    assert all(r["episodes"] == 1 and r["expert"][0] == 2 for r in info["rows"])
    p1_train, p1_total = info["params"]["phase1"]
    p2_train, p2_total = info["params"]["phase2"]
    assert p1_train == p1_total and 0 < p2_train < p1_total / 5 and p2_total == p1_total
    readme = (report / "README.md").read_text()
    assert "Phase I" in readme and "| stage | variant | success | 95% CI |" in readme
    saved = json.loads((report / "results.json").read_text())
    assert saved["heldout"] == "sawyer-joint7" and saved["settings"]["steps_phase1"] == 3
    # the adapted checkpoint uses the held-out variant's own domain
    cfg = json.loads((tmp_path / "demo" / "phase2" / "final" / "config.json").read_text())
    assert cfg["domain_id"] == 21


def test_demo_rejects_heldout_in_training(tmp_path):
    from xvla.sim.demo import run_demo

    with pytest.raises(ValueError, match="heldout_variant"):
        run_demo(micro_settings(tmp_path, heldout_variant="sawyer"))


def test_demo_cli_registered():
    from xvla.cli import build_parser
    from xvla.flags import dataclass_from_args
    from xvla.sim.demo import DemoSettings

    args = build_parser().parse_args(["demo", "--steps-phase1", "5", "--tasks", "reach", "--no-progress"])
    settings = dataclass_from_args(DemoSettings, args)
    assert args.func.__name__ == "cmd_demo" and settings.steps_phase1 == 5 and settings.progress is False
    args = build_parser().parse_args(["smoke"])
    assert args.func.__name__ == "cmd_smoke"


def test_eval_offline_tiny(tmp_path, tokenizer):
    from train.support import FRONT, tiny_train_config, write_dataset

    from xvla import XVLAPolicy
    from xvla.cli import main
    from xvla.sim.offline import OfflineEvalConfig, evaluate_offline

    root = write_dataset(tmp_path / "ds", lengths=(12, 9, 10), action_dim=5)
    ckpt = XVLAPolicy(tiny_train_config(image_keys=[FRONT], real_action_dim=5), tokenizer=tokenizer)
    ckpt_dir = ckpt.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "off"
    report = evaluate_offline(
        OfflineEvalConfig(
            policy=str(ckpt_dir), dataset=str(root), output=str(out), episodes=[1, 2], plot_episodes=1
        )
    )
    assert report["episodes"] == [1, 2]
    assert report["predictions"] == 3 + 3  # frames 0, 4, 8 of each 9- and 10-frame episode
    assert [r["dim"] for r in report["per_dim"]] == [0, 1, 2, 3, 4]
    assert all(r["mae"] >= 0 and r["rmse"] >= r["mae"] - 1e-9 for r in report["per_dim"])
    assert len(report["plots"]) == 5 and all((out / p).is_file() for p in report["plots"])
    assert "| action dim | MAE | RMSE |" in (out / "metrics.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["settings"]["stride"] == 4

    code = main(["eval-offline", str(ckpt_dir), str(root), "--episodes", "0-1", "--plot-episodes", "0",
                 "--output", str(tmp_path / "cli")])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["episodes"] == [0, 1]
