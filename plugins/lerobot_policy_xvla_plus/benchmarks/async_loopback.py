"""Idle ticks and chunk-switch jumps of LeRobot's robot_client driving X-VLA, per execution strategy.

Runs in .venv-lerobot (``make lerobot-env``), on loopback, with the simulated Sawyer robot plugin:

    .venv-lerobot/bin/python plugins/lerobot_policy_xvla_plus/benchmarks/async_loopback.py --ticks 60

For each strategy it starts ``xvla-lerobot-server`` (every inference padded to ``--latency`` seconds, as a
slower model would take) and LeRobot's unmodified ``robot_client`` at ``--fps``. ``sync`` asks only when
the client's queue is empty (``--chunk_size_threshold=0``), the others when half of it is left. Metrics
on the executed xyz commands, clipped to [-1, 1] as the arm takes them (as docs/realtime.md measures):

- idle ticks: control ticks with no action to execute (gaps between executed actions, in ticks; the
  wait for the first chunk is not counted);
- jump: the norm of the change of command at a step where a newer chunk takes over.

The model is a tiny random X-VLA (no trained checkpoint is reachable offline): the numbers compare the
strategies' timing and continuity, not task success.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BIN = Path(sys.executable).parent
CAMERAS = ["observation.images.main", "observation.images.wrist"]


def build_checkpoint(folder: Path, chunk: int) -> Path:
    from xvla import XVLAConfig, XVLAPolicy
    from xvla.config import tiny_florence_config
    from xvla.tokenizer import train_bpe_tokenizer

    tokenizer = folder / "tokenizer"
    train_bpe_tokenizer(["reach the goal move the arm to the target"], vocab_size=300).save_pretrained(
        str(tokenizer)
    )
    torch.manual_seed(0)
    config = XVLAConfig(
        hidden_size=32,
        depth=2,
        num_heads=4,
        num_domains=4,
        len_soft_prompts=4,
        dim_time=8,
        max_len_seq=200,
        chunk_size=chunk,
        n_action_steps=chunk,
        max_state_dim=8,
        action_mode="auto",
        max_action_dim=8,
        real_action_dim=4,
        image_keys=CAMERAS,
        image_size=(32, 32),
        tokenizer_max_length=12,
        tokenizer_name=str(tokenizer),
        florence_config=tiny_florence_config(width=24, vocab_size=300),
    )
    path = folder / "checkpoint"
    XVLAPolicy(config).save_pretrained(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(strategy: str, checkpoint: Path, folder: Path, args: argparse.Namespace) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    port, trace, log = free_port(), folder / f"trace_{strategy}", folder / f"robot_{strategy}.jsonl"
    server = subprocess.Popen(
        [
            str(BIN / "xvla-lerobot-server"),
            f"--port={port}",
            f"--strategy={strategy}",
            "--seed=0",
            f"--fps={args.fps}",
            f"--execute_steps={args.execute_steps}",
            f"--inference_latency_s={args.latency}",
            f"--trace_dir={trace}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    for line in server.stdout:
        if line.startswith("READY"):
            break
    threshold = 0.0 if strategy == "sync" else 0.5
    # robot_client writes logs/ into its working directory, hence cwd=folder.
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lerobot.async_inference.robot_client",
            "--robot.type=xvla_metaworld",
            "--robot.id=bench",
            f"--robot.log_path={log}",
            "--robot.image_size=32",
            f"--server_address=127.0.0.1:{port}",
            "--policy_type=xvla_plus",
            f"--pretrained_name_or_path={checkpoint}",
            "--policy_device=cpu",
            f"--actions_per_chunk={args.chunk}",
            f"--chunk_size_threshold={threshold}",
            f"--fps={args.fps}",
            "--aggregate_fn_name=latest_only",
            "--task=reach the goal",
        ],
        stdout=(folder / f"client_{strategy}.txt").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    try:
        while not log.exists() or len(log.read_text().splitlines()) < args.ticks:
            if client.poll() is not None:
                raise RuntimeError(
                    f"robot_client exited with {client.returncode}: "
                    + (folder / f"client_{strategy}.txt").read_text()[-2000:]
                )
            time.sleep(0.2)
    finally:
        for p in (client, server):
            p.send_signal(signal.SIGINT)
        for p in (client, server):
            p.wait(timeout=30)
    return metrics(log, trace, args)


def metrics(log: Path, trace: Path, args: argparse.Namespace) -> dict:
    executed = [json.loads(s) for s in log.read_text().splitlines()][: args.ticks]
    actions = np.array([e["action"] for e in executed], dtype=np.float64)
    times = np.array([e["t"] for e in executed])
    dt = 1.0 / args.fps
    idle = int(sum(max(0, round(g / dt) - 1) for g in np.diff(times)))
    plans = []
    for path in sorted(trace.glob("chunk_*.npz")):
        data = np.load(path)
        plans.append((json.loads(str(data["meta"]))["position"], data["plan"].astype(np.float64)))

    def source(step: int, action: np.ndarray) -> int:
        found = [
            n
            for n, (p, plan) in enumerate(plans)
            if p <= step < p + len(plan) and np.allclose(plan[step - p], action, atol=1e-6)
        ]
        return max(found) if found else -1

    sources = [source(s, a) for s, a in enumerate(actions)]
    xyz = np.clip(actions[:, :3], -1, 1)
    jumps = [
        float(np.linalg.norm(xyz[s] - xyz[s - 1])) for s in range(1, len(xyz)) if sources[s] != sources[s - 1]
    ]
    return {
        "ticks": len(executed),
        "chunks": len(plans),
        "idle": idle,
        "switches": len(jumps),
        "mean_jump": float(np.mean(jumps)) if jumps else 0.0,
        "max_jump": max(jumps, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--execute_steps", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per inference")
    parser.add_argument("--strategies", nargs="+", default=["sync", "blend", "rtc"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xvla_async_") as tmp:
        folder = Path(tmp)
        checkpoint = build_checkpoint(folder, args.chunk)
        print(f"fps {args.fps:g}, chunk {args.chunk}, inference {args.latency:g} s, {args.ticks} ticks")
        print("| strategy | chunks | idle ticks | switches | mean jump | max jump |")
        print("|---|---|---|---|---|---|")
        for strategy in args.strategies:
            m = run(strategy, checkpoint, folder, args)
            print(
                f"| {strategy} | {m['chunks']} | {m['idle']} | {m['switches']} | {m['mean_jump']:.3f} | {m['max_jump']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
