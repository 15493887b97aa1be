"""Drive a gymnasium environment through an xvla policy server.

The loop every robot or simulator client runs: observe -> ask the server for an action chunk ->
execute the first ``--replan`` actions -> observe again.

    # against a running server (xvla serve --policy.path=DIR):
    python examples/serve_gym_client.py --url http://127.0.0.1:8010 --env Pendulum-v1 --domain-id 0

    # self-contained: starts a local server on a small random checkpoint first (actions are noise)
    python examples/serve_gym_client.py --env Pendulum-v1 --episodes 2

Needs the ``serve`` extra and ``gymnasium`` (``pip install 'xvla[serve]' gymnasium``). Frames come
from ``env.render()`` when the environment can render (classic-control needs pygame); otherwise a
frame is drawn from the observation vector so that the loop still runs.

Mapping X-VLA's action space onto an arbitrary gym action space is the robot-specific part: here a
Box takes the first ``n`` action dims clipped to its bounds, a Discrete the argmax of the first
``n`` dims. Replace :func:`to_env_action` (and :func:`to_observation`) for a real embodiment.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import deque

import numpy as np


def synthetic_frame(obs_vector: np.ndarray, size: int = 96) -> np.ndarray:
    """A picture of the observation: one vertical bar per value, height by value (for envs without rendering)."""
    frame = np.zeros((size, size, 3), dtype=np.uint8)
    values = np.tanh(obs_vector.astype(np.float32))[: size // 4]
    width = max(1, size // max(1, len(values)))
    for i, v in enumerate(values):
        height = int((v + 1) / 2 * (size - 1))
        frame[size - height :, i * width : (i + 1) * width] = (60 + 40 * (i % 5), 200, int(255 * (v + 1) / 2))
    return frame


def to_observation(env, obs, task: str, domain_id: int, state_dim: int, can_render: bool) -> dict:
    vector = np.asarray(obs, dtype=np.float32).reshape(-1)
    frame = env.render() if can_render else None
    if frame is None:
        frame = synthetic_frame(vector)
    return {
        "observation.images.main": np.ascontiguousarray(frame, dtype=np.uint8),
        "observation.state": vector[:state_dim],
        "task": task,
        "domain_id": domain_id,
    }


def to_env_action(action: np.ndarray, space):
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        n = int(np.prod(space.shape))
        values = np.resize(action, n).reshape(space.shape)  # repeats dims if the model has fewer
        return np.clip(values, space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.Discrete):
        return int(np.argmax(action[: space.n]))
    raise NotImplementedError(f"map X-VLA actions onto {type(space).__name__} in to_env_action()")


def can_render(env) -> bool:
    try:
        return env.render() is not None
    except Exception:  # noqa: BLE001 - e.g. pygame missing: fall back to synthetic frames
        return False


@contextlib.contextmanager
def local_server():
    """A server on a small random checkpoint, in this process, for a self-contained demo."""
    from xvla.serve.server import BackgroundServer, ServeConfig
    from xvla.serve.tiny_checkpoint import tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_checkpoint(f"{tmp}/checkpoint")
        with BackgroundServer(
            ServeConfig(policy_path=str(path), port=0, device="cpu", log_level="warning")
        ) as srv:
            print(f"started a local server on a random checkpoint at {srv.url}")
            yield srv.url


def run(url: str, args) -> None:
    import gymnasium as gym

    from xvla.serve import Client

    with Client(url, api_key=args.api_key, image_format=args.image_format) as client:
        info = client.info()
        print(
            f"server: {info['checkpoint']} ({info['action_mode']}, chunk {info['chunk_size']} x "
            f"{info['action_dim']}, domains {info['domain_ids'][:8]}...)"
        )
        env = gym.make(args.env, render_mode="rgb_array")
        for episode in range(args.episodes):
            obs, _ = env.reset(seed=args.seed + episode)
            rendering = can_render(env)
            queue: deque = deque()
            total, latencies = 0.0, []
            for step in range(args.max_steps):
                if not queue:
                    observation = to_observation(
                        env, obs, args.task, args.domain_id, info["proprio_dim"], rendering
                    )
                    start = time.perf_counter()
                    chunk = client.act(observation, seed=args.seed * 100_003 + step)
                    latencies.append(time.perf_counter() - start)
                    queue.extend(chunk[: args.replan])
                obs, reward, terminated, truncated, _ = env.step(
                    to_env_action(queue.popleft(), env.action_space)
                )
                total += float(reward)
                if terminated or truncated:
                    break
            print(
                f"episode {episode}: {step + 1} steps, return {total:.2f}, {len(latencies)} server calls, "
                f"median latency {1000 * float(np.median(latencies)):.1f} ms"
                f"{'' if rendering else ' (synthetic frames: the env cannot render here)'}"
            )
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=None, help="server address; default: start a local demo server")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--replan", type=int, default=4, help="actions executed from each chunk")
    parser.add_argument("--domain-id", type=int, default=0)
    parser.add_argument("--task", default="balance the pole")
    parser.add_argument("--image-format", choices=["raw", "png", "jpeg"], default="raw")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.url:
        run(args.url, args)
    else:
        with local_server() as url:
            run(url, args)


if __name__ == "__main__":
    main()
