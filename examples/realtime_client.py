"""A fixed-rate control loop that keeps the robot moving while the server computes the next chunk.

The loop a real robot runs: every ``1 / --hz`` seconds, observe, ask the executor for the action of
this tick, send it. The executor starts the next inference in a background thread early enough (from
the measured latency) and merges the new chunk when it arrives, with the chosen strategy:

    # against a running server (xvla serve --policy.path=DIR):
    python examples/realtime_client.py --url http://127.0.0.1:8010 --env Pendulum-v1 --strategy rtc --hz 20

    # self-contained: starts a local server on a small random checkpoint first (actions are noise)
    python examples/realtime_client.py --env Pendulum-v1 --strategy blend --episodes 2

A gymnasium environment stands in for the robot; the observation and action mappings are those of
``serve_gym_client.py`` (replace them for a real embodiment). Needs ``pip install 'xvla[serve]' gymnasium``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from serve_gym_client import can_render, local_server, to_env_action, to_observation

from xvla.execution import STRATEGIES, ActionExecutor, ExecutionConfig, trace_metrics


def control_loop(env, executor: ActionExecutor, args, proprio_dim: int, episode: int) -> dict:
    """One episode at a fixed rate; returns what happened (ticks, overruns, idle ticks, smoothness)."""
    obs, _ = env.reset(seed=args.seed + episode)
    rendering = can_render(env)
    period = 1.0 / args.hz
    next_tick = time.perf_counter()
    overruns = 0
    total = 0.0
    for _ in range(args.max_steps):
        observation = to_observation(env, obs, args.task, args.domain_id, proprio_dim, rendering)
        action = executor.act(observation)  # returns at once: inference runs in the background
        obs, reward, terminated, truncated, _ = env.step(to_env_action(action, env.action_space))
        total += float(reward)
        if terminated or truncated:
            break
        next_tick += period
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            overruns += 1  # the simulator itself was slower than the control rate
            next_tick = time.perf_counter()
    metrics = trace_metrics(executor.trace)
    return {"return": total, "ticks": len(executor.trace), "overruns": overruns, **metrics}


def run(url: str, args) -> None:
    import gymnasium as gym

    from xvla.serve import Client

    with Client(url, api_key=args.api_key) as client:
        info = client.info()
        print(
            f"server: {info['checkpoint']} ({info['action_mode']}, chunk {info['chunk_size']} x {info['action_dim']})"
        )
        config = ExecutionConfig(args.strategy, execute_steps=args.execute_steps, guidance=args.guidance)
        env = gym.make(args.env, render_mode="rgb_array")
        # While nothing is planned (before the first chunk, or a late one) the robot repeats its last
        # command; before any command it gets zeros. A real arm would hold its current pose.
        width = info["action_dim"]

        def hold(last):
            return np.zeros(width, dtype=np.float32) if last is None else last

        with ActionExecutor(client, config, control_dt=1.0 / args.hz, seed=args.seed, hold=hold) as executor:
            for episode in range(args.episodes):
                executor.reset()
                r = control_loop(env, executor, args, info["proprio_dim"], episode)
                print(
                    f"episode {episode}: {r['ticks']} ticks at {args.hz:g} Hz, return {r['return']:.2f}, "
                    f"{r['idle_steps']} idle ticks, {r['switches']} chunk switches (max jump {r['max_switch_jump']:.3f}), "
                    f"latency estimate {1000 * executor.latency.seconds:.0f} ms = {executor.expected_delay} ticks, "
                    f"{r['overruns']} overruns"
                )
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--url", default=None, help="policy server URL (default: start a local one on a random checkpoint)"
    )
    p.add_argument("--api-key", default=None)
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--strategy", default="rtc", choices=STRATEGIES)
    p.add_argument(
        "--guidance", default="inpaint", choices=["inpaint", "guided"], help="rtc's sampler constraint"
    )
    p.add_argument("--execute-steps", type=int, default=None, help="actions per chunk before the next one")
    p.add_argument("--hz", type=float, default=20.0, help="control rate")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--task", default="swing the pendulum up")
    p.add_argument("--domain-id", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.url:
        run(args.url, args)
    else:
        with local_server() as url:
            run(url, args)


if __name__ == "__main__":
    main()
