"""xvla.serve.Client / AsyncClient against a real server, and the `xvla serve` command."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import torch

from xvla.cli import build_parser
from xvla.serve import AsyncClient, Client, ServerError

from .serve_support import ACTION_DIM, CHUNK, frame, running_server


def observation(rng, domain_id=2):
    return {
        "observation.images.front": frame(rng, 48, 64),  # HxWx3 uint8 numpy
        "observation.images.wrist": torch.rand(1, 3, 24, 24),  # LeRobot-style float tensor, batch of 1
        "observation.state": torch.randn(1, 6),
        "task": ["stack the cubes"],
        "domain_id": domain_id,
    }


def test_client_act(server, rng):
    obs = observation(rng)
    with Client(server.url) as client:
        chunk = client.act(obs, seed=3)
        assert chunk.shape == (CHUNK, ACTION_DIM) and chunk.dtype == np.float32
        assert client.last_timing["batch_sizes"] == [1]
        np.testing.assert_allclose(client.act(obs, seed=3), chunk, atol=1e-6)
        noise = torch.randn(CHUNK, ACTION_DIM)
        np.testing.assert_allclose(
            client.act(obs, noise=noise), client.act(obs, noise=noise.numpy()), atol=1e-6
        )
        batch = client.act_batch([obs, observation(rng, domain_id=4)], seed=3)
        assert batch.shape == (2, CHUNK, ACTION_DIM)
        np.testing.assert_allclose(batch[0], chunk, atol=1e-5)  # seed + 0 for the first observation
        assert client.health()["status"] == "ok" and client.info()["chunk_size"] == CHUNK
        official = client.act_official([frame(rng)], np.zeros(4), "open the drawer", domain_id=1)
        assert official.shape == (CHUNK, ACTION_DIM)


def test_client_image_formats(server, rng):
    obs = observation(rng)
    with Client(server.url) as raw, Client(server.url, image_format="png") as png:
        np.testing.assert_allclose(png.act(obs, seed=1), raw.act(obs, seed=1), atol=1e-6)  # lossless
    with Client(server.url, image_format="jpeg", jpeg_quality=80) as jpeg:
        assert np.isfinite(jpeg.act(obs, seed=1)).all()


def test_client_errors(server, rng):
    with Client(server.url) as client:
        with pytest.raises(ServerError) as info:
            client.act({**observation(rng), "domain_id": 99})
        assert info.value.status == 422 and info.value.field == "observations[0].domain_id"
        assert info.value.request_id and "domain_id" in str(info.value)
        with pytest.raises(ServerError) as info:
            client.act({**observation(rng), "observation.state": np.zeros(50)})
        assert "at most 8" in info.value.detail


def test_async_client_concurrent(server, rng):
    observations = [observation(rng, domain_id=d) for d in range(4)]

    async def main():
        async with AsyncClient(server.url) as client:
            return await asyncio.gather(*(client.act(o, seed=i) for i, o in enumerate(observations)))

    chunks = asyncio.run(main())
    with Client(server.url) as client:
        for i, (obs, chunk) in enumerate(zip(observations, chunks, strict=True)):
            np.testing.assert_allclose(chunk, client.act(obs, seed=i), atol=1e-5)


def test_client_api_key(serve_checkpoint, rng):
    with running_server(serve_checkpoint, api_key="k") as srv:
        with Client(srv.url) as anonymous, pytest.raises(ServerError) as info:
            anonymous.act(observation(rng))
        assert info.value.status == 401
        with Client(srv.url, api_key="k") as client:
            assert client.act(observation(rng)).shape == (CHUNK, ACTION_DIM)


def test_cli_flags_come_from_serve_config():
    from xvla.flags import dataclass_from_args
    from xvla.serve.server import ServeConfig

    args = build_parser().parse_args(
        ["serve", "--policy.path", "some/dir", "--domain-ids", "0,3", "--port=9"]
    )
    cfg = dataclass_from_args(ServeConfig, args)
    assert cfg.policy_path == "some/dir" and cfg.host == "127.0.0.1" and cfg.port == 9
    assert cfg.domain_ids == [0, 3] and cfg.api_key is None and cfg.max_batch_size >= 1
    for flag, adapters in (
        ("--adapter=left=/a/l.safetensors", ["left=/a/l.safetensors"]),  # one needs no comma
        ("--adapters=left=L,right=R", ["left=L", "right=R"]),
    ):
        args = build_parser().parse_args(["serve", "--policy.path", "some/dir", flag])
        assert dataclass_from_args(ServeConfig, args).adapters == adapters
    with pytest.raises(ValueError, match="port"):
        dataclass_from_args(
            ServeConfig, build_parser().parse_args(["serve", "--policy.path=x", "--port", "high"])
        )


def test_cli_serves_and_stops_gracefully(serve_checkpoint, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "XVLA_API_KEY": "from-env"}
    log = open(tmp_path / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvla.cli", "serve", f"--policy.path={serve_checkpoint}", "--port", str(port),
         "--device", "cpu", "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, open(tmp_path / "server.log").read()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        assert httpx.get(url + "/info").status_code == 401  # the key came from XVLA_API_KEY
        info = httpx.get(url + "/info", headers={"X-API-Key": "from-env"}).json()
        assert info["checkpoint"] == str(serve_checkpoint)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is its normal exit
    assert code in (0, -signal.SIGTERM), code
    text = (tmp_path / "server.log").read_text()
    assert "batcher stopped" in text and "Traceback" not in text, text


def test_remote_policy_gives_the_in_process_chunks(server, serve_checkpoint, rng):
    from xvla import XVLAPolicy
    from xvla.serve import RemotePolicy

    cams = ["observation.images.a", "observation.images.b"]  # sorted: /v1/act and the official order agree
    batch = {
        cams[0]: np.stack([frame(rng), frame(rng)]),
        cams[1]: np.stack([frame(rng), frame(rng)]),
        "observation.state": rng.normal(size=(2, 6)).astype(np.float32),
        "task": ["open it", "close it"],
        "domain_id": 1,
    }
    noise = torch.randn(2, CHUNK, ACTION_DIM)
    with torch.no_grad():
        local = (
            XVLAPolicy.from_pretrained(serve_checkpoint)
            .eval()
            .predict_action_chunk(batch, noise=noise)
            .numpy()
        )
    with RemotePolicy(server.url) as native, RemotePolicy(server.url, cameras=cams) as official:
        assert native.noise_shape == (CHUNK, ACTION_DIM)
        np.testing.assert_allclose(native.predict_action_chunk(batch, noise=noise), local, atol=1e-5)
        np.testing.assert_allclose(
            official.predict_action_chunk(batch, noise=noise.numpy()), local, atol=1e-5
        )
        with pytest.raises(ValueError, match="official /act takes no prefix"):
            official.predict_action_chunk(batch, prefix=np.zeros((2, 1, ACTION_DIM)))
