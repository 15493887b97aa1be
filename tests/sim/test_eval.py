"""Closed-loop evaluation: the rollout loop, reports and videos, with the experts and with a tiny X-VLA."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import tiny_sim_policy


def test_expert_eval_writes_report(metaworld, tmp_path):
    import av

    from xvla.sim.evaluate import EvalConfig, evaluate

    out = tmp_path / "eval"
    config = EvalConfig(
        policy="expert",
        tasks="reach-v3",
        variant="sawyer-rot90",
        episodes_per_task=2,
        num_envs=1,
        videos=1,
        image_size=32,
        max_steps=120,
        output=str(out),
        progress=False,
    )
    report = evaluate(config)
    task = report["per_task"]["reach-v3"]
    assert task["successes"] == 2 and task["success_rate"] == 1.0
    assert task["ci95"][0] == pytest.approx(0.342, abs=1e-3) and task["ci95"][1] == 1.0
    assert 10 < task["mean_length"] < 120
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"]["successes"] == 2 and saved["settings"]["domain_id"] == 20
    assert [e["index"] for e in saved["episodes"]] == [0, 1]
    markdown = (out / "results.md").read_text()
    assert "| reach-v3 | 2/2 (100%) | 34-100% |" in markdown
    assert report["videos"] == ["videos/reach-v3_ep000_success.mp4"]
    with av.open(str(out / report["videos"][0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == saved["episodes"][0]["length"] + 1
    assert frames[0].shape == (192, 384, 3)  # two 32x32 cameras side by side, enlarged x6


def test_cli_eval_expert(metaworld, tmp_path, capsys):
    from xvla.cli import main

    code = main([
        "eval", "expert", "--tasks", "drawer-close", "--variant", "sawyer-joint7", "--episodes-per-task", "1",
        "--num-envs", "1", "--videos", "0", "--image-size", "32", "--output", str(tmp_path), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert "| drawer-close-v3 | 1/1 (100%)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_policy(tokenizer):
    return tiny_sim_policy(tokenizer)


def test_xvla_policy_rollouts_do_not_depend_on_num_envs(metaworld, tiny_policy):
    from xvla.sim.evaluate import episode_specs
    from xvla.sim.rollout import run_rollouts

    specs = episode_specs(["reach-v3", "push-v3"], 1, seed=5, videos=0)
    kwargs = dict(variant="sawyer", max_steps=5, noise_seed=3, progress=False)
    one, timing = run_rollouts(tiny_policy, specs, num_envs=1, **kwargs)
    two, _ = run_rollouts(tiny_policy, specs, num_envs=2, **kwargs)
    assert [(r.task, r.length, r.success) for r in one] == [("reach-v3", 5, False), ("push-v3", 5, False)]
    assert timing["chunks"] == 3 * 2 and timing["env_steps"] == 10  # a new chunk every n_action_steps=2
    for a, b in zip(one, two, strict=True):
        assert a.task == b.task
        np.testing.assert_allclose(a.final_state, b.final_state, atol=1e-4)
    from xvla.sim.metaworld_env import MetaWorldEnv

    env = MetaWorldEnv("reach-v3", image_size=32)
    start, _ = env.reset(seed=specs[0].seed)
    env.close()
    assert np.abs(one[0].final_state[:3] - start["observation.state"][:3]).max() > 1e-4  # the actions arrived


def test_a_rollout_through_a_server_gets_the_noise_of_a_local_one(
    metaworld, tiny_policy, tmp_path, monkeypatch
):
    """A RemotePolicy is seeded like an in-process policy: each chunk's noise comes from (noise seed, episode
    seed, chunk number) and travels with the request, so the server samples what the local policy samples.
    It also executes as many actions of each chunk as the local one: the server reports n_action_steps."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import torch

    from xvla.serve.client import RemotePolicy
    from xvla.serve.server import BackgroundServer, ServeConfig
    from xvla.sim.evaluate import episode_specs
    from xvla.sim.rollout import run_rollouts

    def recording(policy):
        noises, real = [], policy.predict_action_chunk

        def spy(batch, **kwargs):
            noises.append(kwargs.get("noise"))
            return real(batch, **kwargs)

        monkeypatch.setattr(policy, "predict_action_chunk", spy)
        return noises

    specs = episode_specs(["reach-v3"], 2, seed=5, videos=0)
    kwargs = dict(variant="sawyer", num_envs=2, max_steps=4, noise_seed=3, domain_id=0, progress=False)
    tiny_policy.save_pretrained(tmp_path / "ckpt")
    server = BackgroundServer(
        ServeConfig(
            policy_path=str(tmp_path / "ckpt"),
            port=0,
            device="cpu",
            threads=1,
            seed=0,
            log_level="warning",
            batch_timeout_ms=5.0,
        )
    ).start()
    try:
        with RemotePolicy(server.url) as remote:
            assert (
                remote.n_action_steps
                == tiny_policy.config.n_action_steps
                == 2
                < tiny_policy.config.chunk_size
            )
            sent = recording(remote)
            through_server, _ = run_rollouts(remote, specs, **kwargs)
    finally:
        server.stop()
    local = recording(tiny_policy)
    in_process, _ = run_rollouts(tiny_policy, specs, **kwargs)
    assert len(sent) == len(local) == 2 and all(n is not None and n.shape[0] == 2 for n in sent)
    for theirs, ours in zip(sent, local, strict=True):
        assert torch.equal(theirs.cpu(), ours.cpu())
    for theirs, ours in zip(through_server, in_process, strict=True):
        np.testing.assert_allclose(theirs.final_state, ours.final_state, atol=1e-4)


def test_a_server_that_does_not_report_n_action_steps_is_refused():
    """Executing whole chunks instead would change the results without a word: ask for the setting."""
    from xvla.sim.evaluate import episode_specs
    from xvla.sim.rollout import run_rollouts

    class SilentServer:  # what RemotePolicy holds for a server whose /info lacks n_action_steps
        n_action_steps = None

        def predict_action_chunk(self, batch, noise=None):
            raise AssertionError("never asked")

    with pytest.raises(ValueError, match="does not report n_action_steps: pass n_action_steps="):
        run_rollouts(
            SilentServer(), episode_specs(["reach-v3"], 1, seed=5, videos=0), "sawyer", progress=False
        )


def test_eval_with_a_policy_object(metaworld, tiny_policy, tmp_path):
    from xvla.sim.evaluate import EvalConfig, evaluate

    config = EvalConfig(
        policy="tiny",
        tasks="reach-v3",
        variant="sawyer",
        episodes_per_task=1,
        num_envs=1,
        videos=1,
        image_size=32,
        max_steps=3,
        output=str(tmp_path),
        progress=False,
        domain_id=0,
    )
    report = evaluate(config, policy=tiny_policy)
    assert report["settings"]["domain_id"] == 0 and report["settings"]["domain_reason"] == "--domain-id"
    assert report["overall"]["episodes"] == 1 and report["overall"]["success_rate"] == 0.0
    assert report["per_task"]["reach-v3"]["mean_length"] == 3
    assert (tmp_path / "videos" / "reach-v3_ep000_failure.mp4").is_file()


def test_cli_eval_checkpoint(metaworld, tiny_policy, tmp_path):
    from xvla.cli import main

    tiny_policy.save_pretrained(tmp_path / "ckpt")
    base = ["eval", str(tmp_path / "ckpt"), "--tasks", "reach", "--episodes-per-task", "1", "--num-envs", "1"]
    # The variant names domain 19, which this checkpoint never trained: stop and say so.
    assert main([*base, "--output", str(tmp_path / "refused"), "--no-progress"]) == 2
    assert not (tmp_path / "refused").exists()
    code = main([
        *base, "--domain-id", "0", "--max-steps", "2", "--videos", "0", "--image-size", "32", "--output", str(tmp_path / "eval"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["settings"]["policy"] == str(tmp_path / "ckpt") and report["overall"]["mean_length"] == 2


def test_rollout_key_map_goes_model_key_to_simulator_key(metaworld, tiny_policy, tmp_path, monkeypatch):
    """The same direction as training and eval-offline: --key-map MODEL_KEY=SIMULATOR_KEY."""
    from xvla.sim.evaluate import EvalConfig, evaluate
    from xvla.utils import UserFacingError

    seen = []
    real = tiny_policy.predict_action_chunk

    def spy(batch, **kwargs):
        seen.append(sorted(k for k in batch if k.startswith("observation.images.")))
        return real({**batch, "observation.images.main": batch["observation.images.front"]}, **kwargs)

    monkeypatch.setattr(tiny_policy, "predict_action_chunk", spy)
    config = EvalConfig(
        policy="tiny",
        tasks="reach-v3",
        episodes_per_task=1,
        num_envs=1,
        videos=0,
        image_size=32,
        max_steps=2,
        output=str(tmp_path),
        progress=False,
        domain_id=0,
        key_map={"observation.images.front": "observation.images.main"},
    )
    evaluate(config, policy=tiny_policy)
    assert seen[0] == ["observation.images.front", "observation.images.wrist"]
    config.key_map = {"observation.images.front": "observation.images.nope"}
    with pytest.raises((KeyError, UserFacingError), match="observation.images.nope"):
        evaluate(config, policy=tiny_policy)


def test_a_rollout_step_feeds_the_policy_the_same_inputs_as_the_python_api(
    metaworld, tiny_policy, tmp_path, monkeypatch
):
    """One observation path: the rollout hands the raw simulator observation to the policy's processor,
    so its model inputs equal those of the same frames given to ``prepare_inputs`` by hand."""
    import numpy as np
    import torch

    from xvla.sim.evaluate import EvalConfig, episode_specs, evaluate
    from xvla.sim.instructions import instruction
    from xvla.sim.metaworld_env import MetaWorldEnv

    batches = []
    real = tiny_policy.predict_action_chunk

    def spy(batch, **kwargs):
        batches.append(batch)
        return real(batch, **kwargs)

    monkeypatch.setattr(tiny_policy, "predict_action_chunk", spy)
    evaluate(
        EvalConfig(
            policy="tiny",
            tasks="reach-v3",
            episodes_per_task=1,
            num_envs=1,
            videos=0,
            image_size=48,
            max_steps=1,
            output=str(tmp_path),
            progress=False,
            domain_id=3,
        ),
        policy=tiny_policy,
    )
    env = MetaWorldEnv("reach-v3", "sawyer", image_size=48, max_episode_steps=1)
    obs, _ = env.reset(seed=episode_specs(["reach-v3"], 1, seed=1000, videos=0)[0].seed)
    env.close()
    by_hand = {k: np.stack([v]) for k, v in obs.items()}
    by_hand.update({"task": [instruction("reach-v3")], "domain_id": 3})
    expected = tiny_policy.prepare_inputs(by_hand)
    assert expected["image_input"].shape[-2:] == (32, 32)  # 48 px frames reach the model at its size
    for name, value in tiny_policy.prepare_inputs(batches[0]).items():
        assert torch.equal(value, expected[name]), name
