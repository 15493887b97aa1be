"""One observation path: the same raw frames, state, instruction, domain and noise give the same model
inputs and the same actions through the Python API, the official ``POST /act``, the native
``POST /v1/act``, the training collation and the simulator's batch, for every checkpoint layout and
for frames at the declared size and at another size."""

from __future__ import annotations

import json

import httpx
import json_numpy
import numpy as np
import pytest
import torch

from xvla import XVLAPolicy
from xvla.train.mixture import Collator

from .serve_support import CHUNK, running_server, serve_config

CAMS = ["observation.images.front", "observation.images.wrist"]
TASK = "pick up the red block"
DOMAIN = 2


@pytest.fixture(scope="module", params=["xvla", "lerobot", "official"])
def checkpoint(request, tmp_path_factory, tokenizer):
    """A 2-camera 40x48 checkpoint (a size no default would guess) written in each layout."""
    config = serve_config(
        image_size=(40, 48),
        max_state_dim=20,
        image_keys=CAMS,
        domain_id=DOMAIN,
        domains={DOMAIN: "arm", 3: "other arm"},
    )
    path = tmp_path_factory.mktemp(f"ckpt_{request.param}")
    torch.manual_seed(0)
    XVLAPolicy(config, tokenizer=tokenizer).save_pretrained(path, format=request.param)
    return path


@pytest.fixture(params=[(40, 48), (61, 97)], ids=["declared-size", "other-size"])
def observation(request):
    rng = np.random.default_rng(sum(request.param))
    height, width = request.param
    frames = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in CAMS]
    state = rng.standard_normal(8).astype(np.float32)
    noise = rng.standard_normal((CHUNK, 20)).astype(np.float32)
    return frames, state, noise


def python_api(policy, frames, state, noise):
    batch = {cam: frame[None] for cam, frame in zip(CAMS, frames, strict=True)}
    batch.update({"observation.state": state[None], "task": [TASK], "domain_id": DOMAIN})
    inputs = policy.prepare_inputs(batch)
    return inputs, policy.predict_action_chunk(batch, noise=torch.from_numpy(noise)[None])[0].numpy()


def test_same_inputs_and_actions_on_every_path(checkpoint, observation):
    frames, state, noise = observation
    policy = XVLAPolicy.from_pretrained(checkpoint)
    assert policy.processor.image_size == (40, 48)  # settled from the checkpoint, whatever its layout
    inputs, actions = python_api(policy, frames, state, noise)

    # Training collation: one raw sample (as the dataset gives it) through the collator.
    sample = {cam: frame for cam, frame in zip(CAMS, frames, strict=True)}
    sample.update(
        {"observation.state": state, "task": TASK, "domain_id": DOMAIN, "action": np.zeros((CHUNK, 20))}
    )
    sample.update({k: torch.tensor(0) for k in ("action_is_pad", "mixture_index", "sample_index", "draw")})
    collated = Collator(policy.processor)([sample])
    for name, value in inputs.items():
        assert torch.equal(collated[name], value), name

    # Simulator rollouts stack per-env observations (numpy, HxWx3) into one batch for the policy.
    sim_batch = {cam: np.stack([frame]) for cam, frame in zip(CAMS, frames, strict=True)}
    sim_batch.update({"observation.state": np.stack([state]), "task": [TASK], "domain_id": DOMAIN})
    for name, value in policy.prepare_inputs(sim_batch).items():
        assert torch.equal(value, inputs[name]), name

    with running_server(checkpoint) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        official = {f"image{i}": json_numpy.dumps(f) for i, f in enumerate(frames)}
        official.update(
            {
                "proprio": json_numpy.dumps(state),
                "language_instruction": TASK,
                "domain_id": DOMAIN,
                "noise": noise.tolist(),
            }
        )
        served = http.post("/act", content=json.dumps(official), headers={"content-type": "application/json"})
        assert served.status_code == 200, served.text
        np.testing.assert_allclose(np.asarray(served.json()["action"]), actions, atol=1e-5, rtol=0)

        native = {cam: json_numpy.dumps(f) for cam, f in zip(CAMS, frames, strict=True)}
        native.update(
            {"observation.state": state.tolist(), "task": TASK, "domain_id": DOMAIN, "noise": noise.tolist()}
        )
        served = http.post("/v1/act", json={"observations": [native]})
        assert served.status_code == 200, served.text
        np.testing.assert_allclose(np.asarray(served.json()["actions"][0]), actions, atol=1e-5, rtol=0)
        info = http.get("/info").json()
        assert info["views"]["image_size"] == [40, 48] and info["default_domain_id"] == DOMAIN


def test_server_refuses_an_untrained_domain(checkpoint, observation):
    frames, state, _ = observation
    with running_server(checkpoint) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        body = {
            "image0": json_numpy.dumps(frames[0]),
            "proprio": json_numpy.dumps(state),
            "language_instruction": TASK,
            "domain_id": 4,
        }
        answer = http.post("/act", json=body)
        assert answer.status_code == 422 and answer.json()["field"] == "domain_id"
        assert "trained" in answer.json()["detail"]
