"""Simulator rollouts through the action executor: strategies, simulated delay, motion metrics, CLI flags."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import tiny_sim_policy


@pytest.fixture(scope="module")
def policy(tokenizer):
    return tiny_sim_policy(tokenizer, chunk_size=6, n_action_steps=3)


def rollout(policy, execution, delay, steps=12):
    from xvla.sim.evaluate import episode_specs
    from xvla.sim.rollout import run_rollouts

    specs = episode_specs(["reach-v3"], 1, seed=5, videos=0)
    results, timings = run_rollouts(
        policy,
        specs,
        "sawyer",
        num_envs=1,
        max_steps=steps,
        noise_seed=3,
        progress=False,
        execution=execution,
        delay_steps=delay,
    )
    return results[0], timings


@pytest.mark.parametrize("execution", ["sync", "replace", "blend", "ensemble", "rtc"])
def test_every_strategy_runs_with_a_delay(metaworld, policy, execution):
    result, timings = rollout(policy, execution, 2)
    assert result.length == 12 and set(result.motion) >= {
        "mean_jerk",
        "max_jerk",
        "max_switch_jump",
        "idle_steps",
    }
    # sync waits 2 steps for every chunk of 3 actions; the others only for the first chunk
    assert result.motion["idle_steps"] == (6 if execution == "sync" else 2)
    assert timings["env_steps"] == 12


def test_sync_and_replace_agree_without_delay(metaworld, policy):
    sync, _ = rollout(policy, "sync", 0)
    replace, _ = rollout(policy, "replace", 0)
    np.testing.assert_array_equal(sync.final_state, replace.final_state)
    assert sync.motion["idle_steps"] == 0


def test_rtc_sends_the_committed_prefix_to_the_policy(metaworld, policy, monkeypatch):
    calls = []
    original = policy.predict_action_chunk

    def recording(
        batch, noise=None, generator=None, steps=None, prefix=None, prefix_weights=None, guidance="inpaint"
    ):
        calls.append(
            (
                None if prefix is None else tuple(prefix.shape),
                None if prefix_weights is None else prefix_weights[0, :2].tolist(),
                guidance,
            )
        )
        return original(
            batch, noise=noise, steps=steps, prefix=prefix, prefix_weights=prefix_weights, guidance=guidance
        )

    monkeypatch.setattr(policy, "predict_action_chunk", recording)
    rollout(policy, "rtc", 2)
    assert calls[0][0] is None  # the first chunk has nothing committed
    assert calls[1] == (
        (1, 3, 4),
        [1.0, 1.0],
        "inpaint",
    )  # 6 - 3 actions left, the first 2 executed during the delay


def test_execution_errors(metaworld, policy):
    from xvla.sim.rollout import run_rollouts

    with pytest.raises(ValueError, match="strategy 'fast' is unknown"):
        rollout(policy, "fast", 0)
    with pytest.raises(ValueError, match="delay_steps=-1"):
        rollout(policy, "sync", -1)
    with pytest.raises(ValueError, match="'rtc' needs chunks at the control rate"):
        from xvla.sim.rollout import EpisodeSpec

        run_rollouts(policy, [EpisodeSpec("reach-v3", 0, 1)], "sawyer", execution="rtc", action_horizon_s=1.0)


def test_cli_eval_with_execution_flags(metaworld, tmp_path):
    import json

    from xvla.cli import main

    code = main([
        "eval", "expert", "--tasks", "reach", "--episodes-per-task", "1", "--num-envs", "1", "--videos", "0",
        "--image-size", "32", "--max-steps", "40", "--output", str(tmp_path), "--no-progress",
        "--execution", "blend", "--delay-steps", "3",
    ])  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["execution"] == "blend" and saved["settings"]["delay_steps"] == 3
    # the scripted expert plans one action per call, so every action waits for its own 3-step delay
    assert saved["episodes"][0]["motion"]["idle_steps"] == 30
