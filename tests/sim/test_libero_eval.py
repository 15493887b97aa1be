"""Capped end-to-end LIBERO evaluation with a tiny checkpoint: in-process, resumed after a kill, through
``xvla serve``, and with worker processes. One task, 20 steps (2 chunks of 10) per episode."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("libero.libero", reason="LIBERO is not installed: pip install 'xvla[libero]'")

from xvla import XVLAConfig, XVLAPolicy  # noqa: E402
from xvla.config import tiny_florence_config  # noqa: E402
from xvla.sim.episode_store import EPISODES_FILE  # noqa: E402
from xvla.sim.libero_eval import LiberoEvalConfig, evaluate_libero  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("libero_ckpt")
    config = XVLAConfig(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=6,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=160,
        chunk_size=10,
        n_action_steps=10,
        max_state_dim=20,
        num_denoising_steps=2,
        tokenizer_max_length=12,
        florence_config=tiny_florence_config(width=24, vocab_size=300),
        image_size=(32, 32),
    )
    XVLAPolicy(config, tokenizer=tokenizer).save_pretrained(path)
    return path


def capped(tmp_path, name: str, **overrides) -> LiberoEvalConfig:
    base = dict(
        suite="libero_spatial",
        tasks=[0],
        episodes_per_task=2,
        num_envs=1,
        max_steps=20,
        videos=1,
        output=str(tmp_path / name),
        progress=False,
    )
    base.update(overrides)
    return LiberoEvalConfig(**base)


@pytest.fixture(scope="module")
def first_run(checkpoint, tmp_path_factory):
    cfg = capped(tmp_path_factory.mktemp("libero_eval"), "inproc", policy=str(checkpoint))
    return cfg, evaluate_libero(cfg)


def test_in_process_run_writes_the_report(first_run):
    cfg, report = first_run
    assert [(e["task_id"], e["episode"], e["length"], e["chunks"]) for e in report["episodes"]] == [
        (0, 0, 20, 2),
        (0, 1, 20, 2),
    ]
    assert report["overall"]["episodes"] == 2 and report["per_task"]["0"]["instruction"].startswith("pick up")
    assert report["settings"]["max_steps"] == 20 and report["settings"]["domain_id"] == 3
    first, second = (np.array(e["final_state"]) for e in report["episodes"])
    assert not np.allclose(first, second)  # two init states, two outcomes
    out = cfg.output
    assert json.loads(open(f"{out}/results.json").read())["overall"] == report["overall"]
    assert "| **all** |" in open(f"{out}/results.md").read()
    import av

    with av.open(f"{out}/{report['videos'][0]}") as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert len(frames) == 21 and frames[0].shape == (256, 512, 3)  # first observation + 20 steps


def test_a_killed_run_resumes_with_identical_results(first_run, checkpoint):
    cfg, report = first_run
    path = f"{cfg.output}/{EPISODES_FILE}"
    lines = open(path).read().splitlines(keepends=True)
    with open(path, "w") as f:  # as if killed while writing the second episode
        f.write(lines[0] + lines[1][:25])
    resumed = evaluate_libero(capped_like(cfg))
    assert resumed["timing"]["episodes_run"] == 1
    assert resumed["episodes"] == report["episodes"]
    again = evaluate_libero(capped_like(cfg))
    assert again["timing"]["episodes_run"] == 0 and again["episodes"] == report["episodes"]
    with pytest.raises(ValueError, match="other settings"):
        evaluate_libero(capped_like(cfg, state_source="measured"))


def capped_like(cfg: LiberoEvalConfig, **overrides) -> LiberoEvalConfig:
    fields = {
        k: getattr(cfg, k)
        for k in (
            "policy",
            "suite",
            "tasks",
            "episodes_per_task",
            "num_envs",
            "max_steps",
            "videos",
            "output",
            "progress",
        )
    }
    fields.update(overrides)
    return LiberoEvalConfig(**fields)


def test_through_the_server_matches_in_process(first_run, checkpoint, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from xvla.serve.server import BackgroundServer, ServeConfig

    _, report = first_run
    server = BackgroundServer(
        ServeConfig(
            policy_path=str(checkpoint),
            port=0,
            device="cpu",
            threads=1,
            seed=0,
            log_level="warning",
            batch_timeout_ms=5.0,
        )
    ).start()
    try:
        remote = evaluate_libero(
            capped(tmp_path, "server", policy_url=server.url, episodes_per_task=1, videos=0)
        )
    finally:
        server.stop()
    ours, theirs = report["episodes"][0], remote["episodes"][0]
    assert (theirs["length"], theirs["success"]) == (ours["length"], ours["success"])
    np.testing.assert_allclose(theirs["final_state"], ours["final_state"], atol=1e-4)


def test_worker_processes_give_the_same_episodes(first_run, checkpoint, tmp_path):
    _, report = first_run
    parallel = evaluate_libero(capped(tmp_path, "pool", policy=str(checkpoint), num_envs=2, videos=0))
    for ours, theirs in zip(report["episodes"], parallel["episodes"], strict=True):
        assert (theirs["task_id"], theirs["episode"], theirs["length"]) == (
            ours["task_id"],
            ours["episode"],
            ours["length"],
        )
        np.testing.assert_allclose(theirs["final_state"], ours["final_state"], atol=1e-5)
