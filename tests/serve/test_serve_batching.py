"""Dynamic batching: concurrent robots with different domains share forward passes, and every answer
equals the answer it gets alone (same noise)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import json_numpy
import numpy as np
import pytest
import torch

from xvla import XVLAPolicy
from xvla.serve.batcher import DynamicBatcher, QueueFullError, ShuttingDownError
from xvla.serve.client import encode_array

from .serve_support import ACTION_DIM, CHUNK, frame, running_server


@pytest.fixture(scope="module")
def batching_server(serve_checkpoint):
    # A long gathering window so that the concurrent requests below surely meet in one batch.
    with running_server(serve_checkpoint, batch_timeout_ms=300.0, max_batch_size=8) as srv:
        yield srv


def robot_observation(rng, i: int) -> dict:
    """Robot i: its own domain, camera count, state width, instruction and seed."""
    return {
        **{f"observation.images.cam{v}": encode_array(frame(rng, 24 + 8 * v, 40)) for v in range(1 + i % 3)},
        "observation.state": encode_array(rng.standard_normal(3 + i % 6).astype(np.float32)),
        "task": ["pick up the red block", "open the drawer", "fold the cloth", "push the button"][i % 4],
        "domain_id": i % 6,
        "seed": 100 + i,
    }


def post(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/act", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_mixed_domain_requests_equal_unbatched(batching_server):
    rng = np.random.default_rng(1)
    observations = [robot_observation(rng, i) for i in range(8)]
    with httpx.Client(base_url=batching_server.url, timeout=60) as client:
        barrier = threading.Barrier(len(observations))

        def send(obs):
            barrier.wait()
            return post(client, {"observations": [obs], "steps": 2})

        with ThreadPoolExecutor(len(observations)) as pool:
            together = list(pool.map(send, observations))
        alone = [post(client, {"observations": [obs], "steps": 2}) for obs in observations]
        in_one_request = post(client, {"observations": observations, "steps": 2})
    sizes = [r["timing"]["batch_sizes"][0] for r in together]
    assert max(sizes) > 1, f"the concurrent requests were never batched: {sizes}"
    assert all(r["timing"]["batch_sizes"] == [1] for r in alone)
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        np.testing.assert_allclose(a["actions"][0], b["actions"][0], atol=1e-5, err_msg=f"robot {i}")
        np.testing.assert_allclose(in_one_request["actions"][i], b["actions"][0], atol=1e-5)
    assert np.asarray(in_one_request["actions"]).shape == (8, CHUNK, ACTION_DIM)


def test_batched_answers_equal_the_library(batching_server, serve_checkpoint):
    """The server's batch == XVLAPolicy.predict_action_chunk on the same mixed-domain batch and noise."""
    rng = np.random.default_rng(2)
    frames = [[frame(rng, 32, 32), frame(rng, 32, 32)] for _ in range(3)]
    states = rng.standard_normal((3, 8)).astype(np.float32)
    noise = rng.standard_normal((3, CHUNK, ACTION_DIM)).astype(np.float32)
    tasks = ["open the drawer", "stack the cubes", "wipe the table"]
    observations = [
        {
            "observation.images.a": encode_array(f[0]),
            "observation.images.b": encode_array(f[1]),
            "observation.state": encode_array(s),
            "task": t,
            "domain_id": d,
        }
        for f, s, t, d in zip(frames, states, tasks, [5, 0, 2], strict=True)
    ]
    with httpx.Client(base_url=batching_server.url, timeout=60) as client:
        served = post(client, {"observations": observations, "noise": encode_array(noise), "steps": 3})
    policy = XVLAPolicy.from_pretrained(serve_checkpoint)
    batch = {
        "observation.images.a": torch.stack([torch.from_numpy(f[0]).permute(2, 0, 1) for f in frames]),
        "observation.images.b": torch.stack([torch.from_numpy(f[1]).permute(2, 0, 1) for f in frames]),
        "observation.state": torch.from_numpy(states),
        "task": tasks,
        "domain_id": torch.tensor([5, 0, 2]),
    }
    expected = policy.predict_action_chunk(batch, noise=torch.from_numpy(noise), steps=3).numpy()
    np.testing.assert_allclose(np.asarray(served["actions"]), expected, atol=1e-5)


def test_requests_with_different_steps_are_split(batching_server):
    rng = np.random.default_rng(3)
    bodies = [
        {
            "image0": json_numpy.dumps(frame(rng)),
            "proprio": json_numpy.dumps(np.zeros(4, np.float32)),
            "language_instruction": "push the button",
            "domain_id": i % 6,
            "steps": 1 + i % 2,
            "seed": i,
        }
        for i in range(6)
    ]
    with httpx.Client(base_url=batching_server.url, timeout=60) as client:
        with ThreadPoolExecutor(len(bodies)) as pool:
            together = list(pool.map(lambda b: client.post("/act", json=b), bodies))
        alone = [client.post("/act", json=b) for b in bodies]
    for a, b in zip(together, alone, strict=True):
        assert a.status_code == b.status_code == 200
        np.testing.assert_allclose(a.json()["action"], b.json()["action"], atol=1e-5)


# ------------------------------------------------------------------------------------------ the batcher
def test_batcher_gathers_groups_and_isolates_failures():
    seen: list[list] = []

    def run(items):
        seen.append(list(items))
        if "bad" in items:
            raise RuntimeError("poisoned")
        return [f"ok:{x}" for x in items]

    batcher = DynamicBatcher(run, max_batch_size=8, timeout_s=0.5).start()
    try:
        batcher.arriving(+1)  # as the app does while a request is being decoded: the worker waits for it
        futures = [batcher.submit(x, key=k) for x, k in [("a", 1), ("b", 1), ("c", 2), ("bad", 1), ("d", 1)]]
        batcher.arriving(-1)
        results = []
        for f in futures:
            try:
                results.append(f.result(timeout=5).value)
            except RuntimeError as exc:
                results.append(str(exc))
    finally:
        batcher.stop()
    assert results == ["ok:a", "ok:b", "ok:c", "poisoned", "ok:d"]
    assert seen[0] == ["a", "b", "bad", "d"] and ["c"] in seen  # one gathering window, split by key
    assert ["a"] in seen and ["bad"] in seen  # the failed batch was retried sample by sample
    assert batcher.stats.failures == 1


def test_batcher_respects_max_batch_size_and_queue_limit():
    gate = threading.Event()
    sizes = []

    def run(items):
        gate.wait(5)
        sizes.append(len(items))
        return items

    batcher = DynamicBatcher(run, max_batch_size=3, timeout_s=0.05, max_queue=7).start()
    try:
        futures = [batcher.submit(i) for i in range(7)]
        with pytest.raises(QueueFullError):
            batcher.submit(99)
        gate.set()
        assert [f.result(timeout=5).value for f in futures] == list(range(7))
    finally:
        batcher.stop()
    assert max(sizes) <= 3 and sum(sizes) == 7


def test_batcher_stop_finishes_submitted_work():
    def run(items):
        time.sleep(0.05)
        return items

    batcher = DynamicBatcher(run, max_batch_size=2, timeout_s=0.0).start()
    futures = [batcher.submit(i) for i in range(5)]
    batcher.stop()
    assert [f.result(timeout=0).value for f in futures] == list(range(5))
    with pytest.raises(ShuttingDownError):
        batcher.submit(5)


def test_a_lone_request_does_not_wait_out_the_window():
    batcher = DynamicBatcher(lambda items: items, max_batch_size=8, timeout_s=2.0).start()
    try:
        start = time.perf_counter()
        assert batcher.submit("x").result(timeout=5).value == "x"
        assert time.perf_counter() - start < 0.5
        batcher.arriving(+1)  # someone is on the way: now the window is used
        start = time.perf_counter()
        future = batcher.submit("y")
        time.sleep(0.2)
        assert not future.done()
        batcher.arriving(-1)
        assert future.result(timeout=5).value == "y"
    finally:
        batcher.stop()
