"""LeRobot's unmodified robot_client drives X-VLA through xvla-lerobot-server, on loopback, with a simulated robot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

import xvla
from xvla.execution import ChunkRequest, PolicySource

pytest.importorskip("metaworld")
pytest.importorskip("lerobot_robot_xvla_sim")
BIN = Path(sys.executable).parent
TICKS = 24
CAMERAS = ["observation.images.main", "observation.images.wrist"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
    }


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny X-VLA for the simulated Sawyer: cameras main + wrist, 4-D state, 4-D actions, chunks of 8."""
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    config = tiny_config(
        action_mode="auto",
        max_action_dim=8,
        real_action_dim=4,
        chunk_size=8,
        n_action_steps=8,
        image_keys=CAMERAS,
        tokenizer_name=str(tokenizer_dir),
    )
    path = tmp_path_factory.mktemp("async") / "checkpoint"
    xvla.XVLAPolicy(config, tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir))).save_pretrained(path)
    return path


def start_server(port: int, trace: Path, strategy: str) -> subprocess.Popen:
    args = [
        str(BIN / "xvla-lerobot-server"),
        f"--port={port}",
        f"--strategy={strategy}",
        "--seed=0",
        "--delay_steps=2",
        "--fps=10",
        "--execute_steps=4",
        f"--trace_dir={trace}",
    ]
    server = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    for line in server.stdout:  # the server prints READY once it listens
        if line.startswith("READY"):
            return server
    raise AssertionError(f"the server exited before it was ready (rc {server.wait()})")


def start_client(port: int, checkpoint: Path, log: Path, output: Path) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "lerobot.async_inference.robot_client",
        "--robot.type=xvla_metaworld",
        "--robot.id=sim",
        f"--robot.log_path={log}",
        "--robot.image_size=32",
        f"--server_address=127.0.0.1:{port}",
        "--policy_type=xvla_plus",
        f"--pretrained_name_or_path={checkpoint}",
        "--policy_device=cpu",
        "--actions_per_chunk=8",
        "--chunk_size_threshold=0.5",
        "--fps=10",
        "--aggregate_fn_name=latest_only",
        "--task=reach the goal",
    ]
    # robot_client writes logs/ into its working directory
    return subprocess.Popen(
        args, stdout=output.open("w"), stderr=subprocess.STDOUT, text=True, env=env(), cwd=output.parent
    )


def wait_for(condition, process: subprocess.Popen, what: str, limit_s: float = 300.0) -> None:
    """Poll until ``condition()`` (a failure to get there is a test failure, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {limit_s:.0f} s")
        time.sleep(0.2)


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()] if path.exists() else []


def stop(*processes: subprocess.Popen) -> None:
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in processes:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def read_trace(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("chunk_*.npz")):
        data = dict(np.load(path))
        data["meta"] = json.loads(str(data["meta"]))
        out.append(data)
    return out


@pytest.mark.parametrize("strategy", ["rtc"])
def test_robot_client_executes_the_plans_xvla_computes(checkpoint, tmp_path, strategy):
    port = free_port()
    trace, log = tmp_path / "trace", tmp_path / "robot.jsonl"
    server = start_server(port, trace, strategy)
    client = start_client(port, checkpoint, log, tmp_path / "client.txt")
    try:
        wait_for(lambda: len(lines(log)) >= TICKS, client, f"{TICKS} executed actions")
    finally:
        stop(client, server)

    executed = lines(log)
    chunks = read_trace(trace)
    # every action executed once, in order: no repeated or skipped timestep
    assert [e["step"] for e in executed] == list(range(len(executed)))
    assert len(chunks) >= 3, "the client should have asked for several chunks"

    # each chunk is what the library computes for that observation, request and noise
    policy = xvla.XVLAPolicy.from_pretrained(checkpoint)
    source = PolicySource(policy, seed=0)
    for c in chunks:
        meta = c["meta"]
        request = ChunkRequest(
            meta["number"],
            meta["position"],
            meta["position"],
            meta["delay"],
            c.get("prefix"),
            c.get("prefix_weights"),
        )
        observation = {k: c[k] for k in c if k.startswith("observation.")}
        observation["task"] = meta["task"]
        assert set(observation) >= {*CAMERAS, "observation.state"}
        np.testing.assert_array_equal(source(observation, request), c["chunk"])

    # each executed action is the plan a chunk sent for that timestep (the newest one that had arrived)
    plans = {}
    for c in chunks:
        position = c["meta"]["position"]
        for i, action in enumerate(c["plan"]):
            plans.setdefault(position + i, []).append(np.asarray(action, dtype=np.float32))
    for e in executed:
        candidates = plans.get(e["step"], [])
        assert any(np.array_equal(np.asarray(e["action"], dtype=np.float32), a) for a in candidates), e[
            "step"
        ]


def test_a_client_without_the_policys_camera_gets_a_grpc_error_and_others_keep_running(
    checkpoint, tmp_path, tokenizer_dir
):
    top = tmp_path / "needs_top"
    config = xvla.XVLAPolicy.from_pretrained(checkpoint).config.replace(image_keys=["observation.images.top"])
    xvla.XVLAPolicy(config).save_pretrained(top)
    port = free_port()
    server = start_server(port, tmp_path / "trace", "rtc")
    good_log, bad_log = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    bad_out = tmp_path / "bad.txt"
    bad = start_client(port, top, bad_log, bad_out)
    good = start_client(port, checkpoint, good_log, tmp_path / "good.txt")
    try:
        wait_for(
            lambda: "lacks camera 'observation.images.top'" in bad_out.read_text(), bad, "the camera error"
        )
        wait_for(lambda: len(lines(good_log)) >= 8, good, "the other client's actions")
    finally:
        stop(bad, good, server)
    assert "INVALID_ARGUMENT" in bad_out.read_text()
    assert not lines(bad_log)  # the bad client never got an action
