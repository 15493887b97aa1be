"""/v1/act with a committed action prefix (real-time chunking) == the in-process sampler."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from xvla import XVLAPolicy
from xvla.execution import ActionExecutor, ExecutionConfig, rtc_prefix_weights
from xvla.serve import Client
from xvla.serve.client import encode_array

from .serve_support import ACTION_DIM, CHUNK, frame


def observation(rng):
    return {
        "observation.images.a": frame(rng, 32, 32),
        "observation.images.b": frame(rng, 32, 32),
        "observation.state": rng.standard_normal(8).astype(np.float32),
        "task": "open the drawer",
        "domain_id": 2,
    }


def in_process(policy, obs, noise, **kwargs):
    batch = {**obs, "observation.state": obs["observation.state"][None], "task": [obs["task"]]}
    return policy.predict_action_chunk(batch, noise=torch.from_numpy(noise)[None], steps=3, **kwargs)[
        0
    ].numpy()


@pytest.mark.parametrize("guidance", ["inpaint", "guided"])
def test_server_prefix_equals_in_process(server, serve_checkpoint, guidance):
    rng = np.random.default_rng(5)
    obs = observation(rng)
    noise = rng.standard_normal((CHUNK, ACTION_DIM)).astype(np.float32)
    prefix = rng.uniform(0.1, 0.9, (3, ACTION_DIM)).astype(np.float32)
    policy = XVLAPolicy.from_pretrained(serve_checkpoint)
    weights = torch.from_numpy(rtc_prefix_weights(2, 3).astype(np.float32))[None]
    expected = in_process(
        policy, obs, noise, prefix=torch.from_numpy(prefix)[None], prefix_weights=weights, guidance=guidance
    )
    with Client(server.url) as client:
        served = client.act(obs, noise=noise, steps=3, prefix=prefix, delay=2, guidance=guidance)
        explicit = client.act(
            obs, noise=noise, steps=3, prefix=prefix, prefix_weights=weights[0], guidance=guidance
        )
        free = client.act(obs, noise=noise, steps=3)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(explicit, expected, atol=1e-5)
    if guidance == "inpaint":
        np.testing.assert_allclose(served[:2], prefix[:2], atol=1e-5)  # weight 1 over the delay: exact
    assert not np.allclose(served, free)


def test_executor_through_the_server_equals_in_process(server, serve_checkpoint):
    rng = np.random.default_rng(6)
    observations = [observation(rng) for _ in range(8)]
    policy = XVLAPolicy.from_pretrained(serve_checkpoint)
    config = ExecutionConfig("rtc", execute_steps=2)
    with Client(server.url) as client:
        remote = ActionExecutor(client, config, delay_steps=1, seed=7, steps=2)
        local = ActionExecutor(policy, config, delay_steps=1, seed=7, steps=2)
        with remote, local:
            got = [remote.step(o) for o in observations]
            want = [local.step(o) for o in observations]
    assert [r.idle for r in got] == [r.idle for r in want] and sum(r.switch for r in got) >= 3
    for a, b in zip(got, want, strict=True):
        if not a.idle:
            np.testing.assert_allclose(a.action, b.action, atol=1e-5)


def test_prefix_errors(server):
    rng = np.random.default_rng(7)
    obs = {k: (encode_array(v) if isinstance(v, np.ndarray) else v) for k, v in observation(rng).items()}
    cases = [
        ({"delay": 1}, "observations[0].prefix", "only apply to a committed 'prefix'"),
        (
            {"prefix": encode_array(np.zeros((2, 5), np.float32)), "delay": 1},
            "observations[0].prefix",
            "[d, 20]",
        ),
        ({"prefix": encode_array(np.zeros((2, ACTION_DIM), np.float32))}, "observations[0].delay", "missing"),
        (
            {"prefix": encode_array(np.zeros((2, ACTION_DIM), np.float32)), "delay": 3},
            "observations[0].delay",
            "out of range",
        ),
        (
            {"prefix": encode_array(np.zeros((2, ACTION_DIM), np.float32)), "delay": 1, "guidance": "x"},
            "observations[0].guidance",
            "choose one of",
        ),
        (
            {"prefix": encode_array(np.zeros((2, ACTION_DIM), np.float32)), "prefix_weights": [0.5, 2.0]},
            "observations[0].prefix_weights",
            "in [0, 1]",
        ),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for extra, field, message in cases:
            response = http.post("/v1/act", json={"observations": [{**obs, **extra}]})
            assert response.status_code == 422, (extra, response.text)
            body = response.json()
            assert body["field"] == field and message in body["detail"], body
    with pytest.raises(ValueError, match="only apply to a prefix"):
        Client(server.url).act(observation(rng), delay=2)
