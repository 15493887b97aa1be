"""One backbone, many robots: adapters loaded at start or at run time, selected per request by name."""

from __future__ import annotations

import httpx
import json_numpy
import numpy as np
import torch

from xvla import XVLAPolicy
from xvla.adapters import domain_rows, export_adapter

from .serve_support import CHUNK, running_server, serve_config


def make_adapters(tmp_path, tokenizer, robots=None):
    """A base checkpoint (ee6d, 20-wide) and two robots "trained" from it (different domain rows and, with
    ``robots`` = {name: config overrides}, their own action spaces), exported as adapters."""
    torch.manual_seed(0)
    XVLAPolicy(serve_config(domains={0: "base"}), tokenizer=tokenizer).save_pretrained(tmp_path / "base")
    paths = {}
    robots = robots or {"left-arm": {}, "right-arm": {}}
    for (robot, overrides), scale in zip(robots.items(), (0.05, 0.1), strict=True):
        trained = XVLAPolicy.from_pretrained(tmp_path / "base", **overrides)
        with torch.no_grad():
            for name, param in trained.model.named_parameters():
                if name in domain_rows(trained.model, 1):
                    param[1].normal_(0, scale)
        trained.config.domains = {0: "base", 1: robot}
        paths[robot] = export_adapter(trained, 1, tmp_path / f"{robot}.safetensors")
        trained.save_pretrained(tmp_path / robot)
    return tmp_path / "base", paths


def observation(robot, rng):
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return {
        "observation.images.front": json_numpy.dumps(frame),
        "observation.state": [0.1] * 4,
        "task": "stack",
        "robot": robot,
        "noise": rng.standard_normal((CHUNK, 20)).astype(np.float32).tolist(),
    }


def test_two_robots_in_one_batch_equal_each_alone(tmp_path, tokenizer):
    base, paths = make_adapters(tmp_path, tokenizer)
    rng = np.random.default_rng(0)
    left, right = observation("left-arm", rng), observation("right-arm", rng)
    spec = f"left-arm={paths['left-arm']},right-arm={paths['right-arm']}"
    with (
        running_server(base, adapters=spec.split(",")) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as http,
    ):
        info = http.get("/info").json()
        assert {a["name"] for a in info["adapters"]} == {"left-arm", "right-arm"}
        both = http.post("/v1/act", json={"observations": [left, right]}).json()["actions"]
    for robot, obs, answer in (("left-arm", left, both[0]), ("right-arm", right, both[1])):
        alone = {**obs, "robot": None, "domain_id": 1}
        with running_server(tmp_path / robot) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
            expected = http.post("/v1/act", json={"observations": [alone]}).json()["actions"][0]
        np.testing.assert_allclose(answer, expected, atol=1e-5)


def test_robots_of_different_action_widths_share_a_batch(tmp_path, tokenizer):
    widths = {"arm7": 7, "bimanual12": 12}
    robots = {
        name: {"action_mode": "auto", "real_action_dim": w, "max_action_dim": 20}
        for name, w in widths.items()
    }
    base, paths = make_adapters(tmp_path, tokenizer, robots)
    rng = np.random.default_rng(0)
    obs = {name: observation(name, rng) for name in widths}
    with (
        running_server(base, adapters=[f"{n}={p}" for n, p in paths.items()]) as srv,
        httpx.Client(base_url=srv.url, timeout=60) as http,
    ):
        info = {a["name"]: a["action_dim"] for a in http.get("/info").json()["adapters"]}
        assert info == widths
        both = http.post("/v1/act", json={"observations": list(obs.values())}).json()["actions"]
    for (name, width), answer in zip(widths.items(), both, strict=True):
        assert np.asarray(answer).shape == (CHUNK, width)
        alone = {**obs[name], "robot": None, "domain_id": 1}
        with running_server(tmp_path / name) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
            expected = http.post("/v1/act", json={"observations": [alone]}).json()["actions"][0]
        np.testing.assert_allclose(answer, expected, atol=1e-5)


def test_adding_an_adapter_at_run_time_needs_the_api_key(tmp_path, tokenizer):
    base, paths = make_adapters(tmp_path, tokenizer)
    body = {"name": "left-arm", "path": str(paths["left-arm"])}
    with running_server(base) as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        assert http.post("/v1/adapters", json=body).status_code == 403  # no --api-key: never open to anyone
    with running_server(base, api_key="k") as srv, httpx.Client(base_url=srv.url, timeout=60) as http:
        assert http.post("/v1/adapters", json=body).status_code == 401
        added = http.post("/v1/adapters", json=body, headers={"x-api-key": "k"})
        assert added.status_code == 200 and added.json()["name"] == "left-arm"
        obs = observation("left-arm", np.random.default_rng(1))
        answer = http.post("/v1/act", json={"observations": [obs]}, headers={"x-api-key": "k"})
        assert answer.status_code == 200, answer.text
        unknown = http.post(
            "/v1/act",
            json={"observations": [observation("nobody", np.random.default_rng(1))]},
            headers={"x-api-key": "k"},
        )
        assert unknown.status_code == 422 and "unknown robot" in unknown.json()["detail"]


def test_an_adapter_loads_between_chunks_never_during_one(tmp_path, tokenizer):
    """POST /v1/adapters runs in a worker thread beside the batcher: a load (a LoRA merge rewrites the backbone)
    must not overlap a chunk in progress."""
    import threading
    import time

    from xvla.serve.engine import ServeEngine
    from xvla.serve.protocol import Observation

    base, paths = make_adapters(tmp_path, tokenizer)
    engine = ServeEngine.from_pretrained(base)
    spans: dict[str, tuple[float, float]] = {}

    def recorded(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            time.sleep(0.3)  # long enough for the other thread to try to start
            out = fn(*args, **kwargs)
            spans[name] = (start, time.perf_counter())
            return out

        return wrapper

    engine.model.generate_actions = recorded("chunk", engine.model.generate_actions)
    engine.policy.load_adapter = recorded("load", engine.policy.load_adapter)
    obs = Observation(
        images=[np.zeros((32, 32, 3), np.uint8)],
        state=np.zeros(4, np.float32),
        task="stack",
        domain_id=0,
        steps=2,
        seed=0,
    )
    chunk = threading.Thread(target=engine.run, args=([engine.prepare(obs)],))
    chunk.start()
    time.sleep(0.05)  # the chunk holds the model now
    engine.load_adapter(paths["left-arm"])
    chunk.join()
    (c0, c1), (l0, l1) = spans["chunk"], spans["load"]
    assert c1 <= l0 or l1 <= c0, spans


def test_client_sends_robot_and_refuses_keys_outside_the_schema(tmp_path, tokenizer):
    """The client and the server parser read one schema: `robot` reaches the server (it was dropped once,
    answering for the default domain), an unknown key is refused unless passed through on purpose."""
    import pytest

    from xvla.serve import Client, ServerError

    base, paths = make_adapters(tmp_path, tokenizer)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    noise = rng.standard_normal((CHUNK, 20)).astype(np.float32)
    obs = {
        "observation.images.front": frame,
        "observation.state": np.full(4, 0.1, np.float32),
        "task": "stack",
    }
    with (
        running_server(base, adapters=[f"{n}={p}" for n, p in paths.items()]) as srv,
        Client(srv.url) as client,
    ):
        raw = httpx.post(
            f"{srv.url}/v1/act",
            timeout=60,
            json={
                "observations": [
                    {
                        **obs,
                        "observation.images.front": json_numpy.dumps(frame),
                        "observation.state": [0.1] * 4,
                        "robot": "left-arm",
                        "noise": noise.tolist(),
                    }
                ]
            },
        ).json()["actions"][0]
        chunk = client.act({**obs, "robot": "left-arm"}, noise=noise)
        np.testing.assert_allclose(chunk, raw, atol=1e-5)
        assert not np.allclose(client.act(obs, noise=noise), raw, atol=1e-3)  # the default domain differs
        with pytest.raises(ServerError, match="unknown robot") as info:
            client.act({**obs, "robot": "nosuchrobot"})
        assert info.value.status == 422 and "left-arm" in info.value.detail
        with pytest.raises(ServerError, match="disagrees"):
            client.act({**obs, "robot": "left-arm", "domain_id": 0})
        with pytest.raises(
            ValueError, match="'gripper_hint' is not part of the /v1/act schema.*pass_unknown_keys"
        ):
            client.act({**obs, "gripper_hint": 1.0})
    with running_server(base) as srv, Client(srv.url, pass_unknown_keys=True) as client:
        with pytest.raises(ServerError, match="unknown key") as info:
            client.act({**obs, "gripper_hint": np.ones(2)})
        assert info.value.status == 422 and info.value.field == "observations[0].gripper_hint"
