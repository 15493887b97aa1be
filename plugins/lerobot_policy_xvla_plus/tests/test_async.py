"""LeRobot's unmodified robot_client drives X-VLA through xvla-lerobot-server, on loopback, with a simulated robot."""

from __future__ import annotations

import json
import os
import pickle
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
    # the robot logged every action it ran, in order (its own count: it does not know timesteps; a repeated
    # or skipped timestep shows below, as an action that is not the plans' action for its step)
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


# ---------------------------------------------------------------------------------------------------------
# The same protocol in one process, LeRobot's RobotClient against the servicer, with the interleaving a
# loaded machine produces spelled out step by step (no sockets, threads or timing).


class StandInSawyer:
    """The simulated Sawyer's features, without its simulator; it records what it executes."""

    def __init__(self):
        from lerobot_robot_xvla_sim.robot import ACTION_NAMES, CAMERAS, STATE_NAMES

        self.state_names, self.action_names, self.cameras = STATE_NAMES, ACTION_NAMES, list(CAMERAS)
        self.observation_features = {
            **dict.fromkeys(STATE_NAMES, float),
            **{c: (32, 32, 3) for c in self.cameras},
        }
        self.action_features = dict.fromkeys(ACTION_NAMES, float)
        self.executed: list[np.ndarray] = []

    def connect(self) -> None:
        pass

    def disconnect(self) -> None:
        pass

    def get_observation(self) -> dict:
        rng = np.random.default_rng(len(self.executed))  # the world moves with every executed action
        state = {n: float(v) for n, v in zip(self.state_names, rng.uniform(-0.5, 0.5, 4), strict=True)}
        return {**state, **{c: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for c in self.cameras}}

    def send_action(self, action: dict) -> dict:
        self.executed.append(np.array([action[n] for n in self.action_names], dtype=np.float32))
        return action


class Loopback:
    """LeRobot's gRPC stub, answered in this process by the servicer, as one client (one peer)."""

    def __init__(self, servicer):
        self.servicer = servicer

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code, details):
        raise AssertionError(f"{code}: {details}")

    def __getattr__(self, method):
        return lambda request: getattr(self.servicer, method)(request, self)


def loopback_client(monkeypatch, checkpoint, trace: Path, actions_per_chunk: int, strategy: str = "rtc"):
    """LeRobot's RobotClient (latest_only) on the stand-in robot, its stub served by an in-process server."""
    monkeypatch.chdir(trace.parent)  # importing robot_client writes logs/ into the working directory
    from lerobot.async_inference import robot_client
    from lerobot.async_inference.configs import RobotClientConfig
    from lerobot_policy_xvla_plus.async_server import ServerConfig, XVLAAsyncServicer
    from lerobot_robot_xvla_sim.robot import XVLASimMetaWorldConfig

    robot = StandInSawyer()
    monkeypatch.setattr(robot_client, "make_robot_from_config", lambda config: robot)
    config = RobotClientConfig(
        policy_type="xvla_plus",
        pretrained_name_or_path=str(checkpoint),
        robot=XVLASimMetaWorldConfig(id="sim"),
        actions_per_chunk=actions_per_chunk,
        chunk_size_threshold=0.5,
        fps=10,
        aggregate_fn_name="latest_only",
        task="reach the goal",
    )
    client = robot_client.RobotClient(config)
    client.channel.close()  # never used: the stub below is the server itself
    server = ServerConfig(
        strategy=strategy, seed=0, delay_steps=2, fps=10, execute_steps=4, trace_dir=str(trace)
    )
    client.stub = Loopback(XVLAAsyncServicer(server))
    assert client.start()
    return client, robot


def get_actions(client) -> list:
    """One GetActions call of the client's receive_actions thread; the actions it got (none for Empty)."""
    from lerobot.transport import services_pb2

    reply = client.stub.GetActions(services_pb2.Empty())
    reply = services_pb2.Actions.FromString(
        reply.SerializeToString()
    )  # as the wire gives it (Empty: no data)
    return pickle.loads(reply.data) if reply.data else []  # nosec: the server's own reply


def receive(client, actions: list) -> None:
    """What receive_actions does with a reply: replace the queue from its actions, then set must_go."""
    if actions:
        client._aggregate_action_queues(actions, client.config.aggregate_fn)
        client.must_go.set()


def execute(client) -> int:
    """One tick of the client's control loop that runs an action; the timestep it ran."""
    client.control_loop_action()
    return client.latest_action


def planned_actions(trace: Path) -> dict[int, list[np.ndarray]]:
    plans: dict[int, list[np.ndarray]] = {}
    for c in read_trace(trace):
        for i, action in enumerate(c["plan"]):
            plans.setdefault(c["meta"]["position"] + i, []).append(np.asarray(action, dtype=np.float32))
    return plans


def test_an_observation_sent_while_the_first_chunk_is_computed_does_not_skip_step_0(
    checkpoint, tmp_path, monkeypatch
):
    """On a loaded machine the first chunk takes longer than a tick, so the client (its queue still empty)
    sends a second observation, stamped timestep 0 although it has executed nothing. The server answers it
    right after the first chunk, and the client may receive that answer before its control loop executes
    step 0. With latest_only the answer replaces the whole queue: if it starts at timestep 1, step 0 is gone
    and the robot's first action is timestep 1's."""
    trace = tmp_path / "trace"
    client, robot = loopback_client(monkeypatch, checkpoint, trace, actions_per_chunk=8)
    client.control_loop_observation("reach the goal")  # observation A: nothing executed, must_go
    first = get_actions(client)  # chunk 0, computed from A ...
    client.control_loop_observation("reach the goal")  # ... while the client sends B (timestep 0 again)
    receive(client, first)
    assert [a.get_timestep() for a in first] == list(range(8))
    receive(client, get_actions(client))  # B's answer arrives before the control loop's next tick
    timesteps = [execute(client) for _ in range(4)]
    client.control_loop_observation("reach the goal")  # half the queue left: the next observation
    receive(client, get_actions(client))
    while client.actions_available():
        timesteps.append(execute(client))

    assert timesteps == list(range(len(timesteps))), "the client skipped or repeated a timestep"
    plans = planned_actions(trace)
    for step, action in zip(timesteps, robot.executed, strict=True):
        assert any(np.array_equal(action, a) for a in plans.get(step, [])), f"step {step}: no traced plan"


@pytest.mark.parametrize("overwritten", [False, True])
def test_a_client_that_ran_step_0_and_has_nothing_left_gets_step_1(
    checkpoint, tmp_path, monkeypatch, overwritten
):
    """The other timestep-0 observation: the client has executed step 0 and its queue is empty (a plan of one
    action), so its observation is must_go. The server must plan from step 1, not send step 0 again or
    nothing (the client would wait forever), also when a newer observation (not must_go, as the client
    sends while it waits) has replaced that one before the server got to it."""
    trace = tmp_path / "trace"
    client, robot = loopback_client(monkeypatch, checkpoint, trace, actions_per_chunk=1)
    client.control_loop_observation("reach the goal")
    receive(client, get_actions(client))
    assert execute(client) == 0 and not client.actions_available()
    client.control_loop_observation("reach the goal")  # timestep 0 (max(latest_action, 0)), must_go
    if overwritten:
        client.control_loop_observation("reach the goal")  # timestep 0 again, not must_go
    actions = get_actions(client)
    assert [a.get_timestep() for a in actions] == [1]
    receive(client, actions)
    assert execute(client) == 1
