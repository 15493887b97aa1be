"""``xvla-lerobot-server``: X-VLA behind LeRobot's async-inference gRPC protocol, for LeRobot's unmodified
``robot_client``.

    xvla-lerobot-server --port=8080 --strategy=rtc --execute_steps=10 --fps=30
    python -m lerobot.async_inference.robot_client --server_address=127.0.0.1:8080 \\
        --policy_type=xvla_plus --pretrained_name_or_path=CHECKPOINT --aggregate_fn_name=latest_only ...

This is transport only. Each client gets an ``xvla.execution.ChunkScheduler`` (``sync``, ``replace``,
``blend``, ``ensemble`` or ``rtc``) and an ``xvla.execution.PolicySource`` around the policy. The
client reports the timestep of the last action it executed, so the server knows what the client still
has queued. That is the plan the scheduler holds. ``rtc`` asks the policy for a chunk that agrees with
that committed prefix; ``blend`` fades from it. The server then sends the merged plan as LeRobot
``TimedAction``s.
With ``--aggregate_fn_name=latest_only`` the client executes exactly that plan: each new plan replaces
the queued actions from its first timestep on.

Timesteps: a chunk computed from an observation whose client has executed timestep ``t`` holds the
actions of timesteps ``t+1, t+2, ...``; from an observation taken before the client executed anything,
``0, 1, ...``. LeRobot's client stamps an observation ``max(latest_action, 0)``, so timestep 0 means
either; :func:`executed_through` tells them apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle  # nosec: LeRobot's protocol carries pickled TimedObservation / TimedAction objects
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from lerobot.async_inference.helpers import RemotePolicyConfig, TimedAction, TimedObservation  # noqa: F401
from lerobot.datasets.utils import build_dataset_frame
from lerobot.transport import services_pb2, services_pb2_grpc
from lerobot.transport.utils import receive_bytes_in_chunks

from xvla.execution import ChunkScheduler, ExecutionConfig, LatencyEstimate, PolicySource

from .configuration_xvla_plus import TYPE_NAME

logger = logging.getLogger("xvla.lerobot_server")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    strategy: str = "rtc"  # an xvla.execution strategy: sync, replace, blend, ensemble, rtc
    execute_steps: int | None = (
        None  # actions of each chunk executed before the next takes over (None: n_action_steps)
    )
    fps: float = 30.0  # the client's control rate: turns measured inference time into ticks of delay
    delay_steps: int | None = None  # a fixed expected delay in ticks (default: measured)
    guidance: str = "inpaint"
    seed: int | None = (
        None  # reproducible noise: chunk n of a client uses xvla.execution.chunk_seed(seed, 0, n)
    )
    device: str | None = None  # override the client's policy_device
    trace_dir: str | None = None  # write every chunk (observation, request, chunk, plan sent) as .npz
    obs_timeout_s: float = 2.0  # GetActions returns Empty after this long without an observation
    inference_latency_s: float = (
        0.0  # benchmarks: pad every inference to this long (a slower model's latency)
    )


@dataclass
class ClientState:
    policy: Any
    features: dict[str, Any]
    rename_map: dict[str, str]
    actions_per_chunk: int
    scheduler: ChunkScheduler
    source: PolicySource
    latency: LatencyEstimate = field(default_factory=LatencyEstimate)
    observation: TimedObservation | None = None
    position: int = 0  # the first timestep the client may not have executed when it took `observation`
    executed: int = -1  # the last timestep the client is known to have executed (-1: none yet)
    answered: bool = False  # the client has been sent actions
    ready: threading.Condition = field(default_factory=threading.Condition)


def executed_through(timed: TimedObservation, answered: bool) -> int:
    """The last timestep a LeRobot 0.4.4 ``robot_client`` had executed when it took ``timed`` (-1: none).

    The client stamps its observations ``max(latest_action, 0)``: timestep ``t > 0`` means it had executed
    ``t``, but timestep 0 also comes before it has executed anything, for instance from an observation
    it sent while the first chunk was computed. Planning that one from timestep 1 would make the client
    drop step 0 (``latest_only`` keeps only the timesteps of the newest plan). Timestep 0 means step 0
    ran only for a ``must_go`` observation once the client has been sent actions. ``must_go`` says the
    client's queue was empty although it had received actions since its previous ``must_go``
    observation, and with nothing executed (``latest_action`` -1) every action it receives stays queued.
    The very first observation is ``must_go`` too, with nothing executed.
    """
    timestep = timed.get_timestep()
    if timestep > 0:
        return timestep
    return 0 if timed.must_go and answered else -1


class XVLAAsyncServicer(services_pb2_grpc.AsyncInferenceServicer):
    def __init__(self, config: ServerConfig):
        self.config = config
        self.clients: dict[str, ClientState] = {}
        self.policies: dict[tuple[str, str], Any] = {}
        self.lock = threading.Lock()
        self.infer_lock = threading.Lock()  # one inference at a time on a shared policy

    # ------------------------------------------------------------------ protocol
    def Ready(self, request, context):  # noqa: N802
        logger.info("client %s connected", context.peer())
        return services_pb2.Empty()

    def SendPolicyInstructions(self, request, context):  # noqa: N802
        setup = pickle.loads(request.data)  # nosec
        if setup.policy_type != TYPE_NAME:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this server runs X-VLA: pass --policy_type={TYPE_NAME} (got {setup.policy_type!r})",
            )
        try:
            policy = self._policy(setup.pretrained_name_or_path, self.config.device or setup.device)
        except (OSError, ValueError) as exc:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot load {setup.pretrained_name_or_path}: {exc}"
            )
        steps = self.config.execute_steps or policy.config.n_action_steps
        # The client decides when to ask (its chunk_size_threshold): every observation it sends gets a chunk,
        # so the scheduler's own horizon is one step; sync still cuts each chunk at execute_steps.
        horizon = steps if self.config.strategy == "sync" else 1
        execution = ExecutionConfig(
            self.config.strategy, execute_steps=horizon, blend_steps=steps, guidance=self.config.guidance
        )
        state = ClientState(
            policy=policy,
            features=setup.lerobot_features,
            rename_map=dict(getattr(setup, "rename_map", {}) or {}),
            actions_per_chunk=int(setup.actions_per_chunk),
            scheduler=ChunkScheduler(execution),
            source=PolicySource(policy, seed=self.config.seed, guidance=self.config.guidance),
        )
        with self.lock:
            self.clients[context.peer()] = state
        logger.info(
            "client %s: %s, strategy %s, execute_steps %d",
            context.peer(),
            setup.pretrained_name_or_path,
            execution.strategy,
            steps,
        )
        return services_pb2.Empty()

    def SendObservations(self, request_iterator, context):  # noqa: N802
        state = self._client(context)
        received = pickle.loads(receive_bytes_in_chunks(request_iterator, None, threading.Event(), "[xvla]"))  # nosec
        try:
            self.to_policy_observation(state, received)  # refuse what the policy cannot read, here
        except (KeyError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).strip("'\""))
        with state.ready:
            state.observation = received  # the newest wins: an older one waiting is stale
            # What the client has executed only grows: an observation that replaced an unanswered one
            # keeps what that one showed (a must_go observation at timestep 0 followed by one that is not).
            state.executed = max(state.executed, executed_through(received, state.answered))
            state.position = state.executed + 1
            state.ready.notify_all()
        return services_pb2.Empty()

    def GetActions(self, request, context):  # noqa: N802
        state = self._client(context)
        with state.ready:
            if state.observation is None:
                state.ready.wait(timeout=self.config.obs_timeout_s)
            observation, state.observation = state.observation, None
            position = state.position
        if observation is None:
            return services_pb2.Empty()
        try:
            actions = self.plan(state, observation, position)
        except (KeyError, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).strip("'\""))
        if not actions:
            return services_pb2.Empty()
        with state.ready:
            state.answered = True
        return services_pb2.Actions(data=pickle.dumps(actions))  # nosec

    # ------------------------------------------------------------------ the X-VLA side
    def plan(self, state: ClientState, timed: TimedObservation, position: int) -> list[TimedAction]:
        """One chunk through the client's scheduler; the plan from ``position``, timed.

        ``position`` is the first timestep the client may still execute (from what its observations
        showed it had executed). A plan may start earlier than the client's next step (the client skips
        the timesteps it has run), never later: the client would skip the steps in between.
        """
        scheduler = state.scheduler
        scheduler.position = scheduler.tick = position
        delay = self.config.delay_steps
        if delay is None:
            delay = state.latency.steps(1.0 / self.config.fps)
        request = scheduler.request(delay)
        if request is None:  # sync: the client asked before its plan ran out; answer with what it has
            return []
        observation = self.to_policy_observation(state, timed)
        start = time.perf_counter()
        with self.infer_lock:
            chunk = state.source(observation, request)
        time.sleep(max(0.0, self.config.inference_latency_s - (time.perf_counter() - start)))
        state.latency.add(time.perf_counter() - start)
        scheduler.receive(request, chunk, honours_prefix=state.source.accepts_prefix)
        plan = scheduler.planned()[: state.actions_per_chunk]
        if self.config.trace_dir:
            self._trace(state, timed, observation, request, chunk, plan, position)
        dt = 1.0 / self.config.fps
        return [
            TimedAction(
                timestamp=timed.get_timestamp() + (i + 1) * dt,
                timestep=position + i,
                action=torch.from_numpy(np.asarray(a, dtype=np.float32)),
            )
            for i, a in enumerate(plan)
        ]

    def to_policy_observation(self, state: ClientState, timed: TimedObservation) -> dict[str, Any]:
        """LeRobot's raw robot observation -> one LeRobot-keyed observation for xvla's processor."""
        raw = timed.get_observation()
        features = {k: v for k, v in state.features.items() if k.startswith("observation.")}
        missing = [
            name
            for f in features.values()
            for name in (f.get("names") or [])
            if f["dtype"] in ("float32", "float64") and name not in raw
        ]
        cameras = [
            k.removeprefix("observation.images.")
            for k, f in features.items()
            if f["dtype"] in ("image", "video")
        ]
        missing += [c for c in cameras if c not in raw]
        if missing:
            raise ValueError(
                f"the observation lacks {missing}, which the client declared in its robot's features"
            )
        frame = build_dataset_frame(features, raw, prefix="observation")
        frame = {state.rename_map.get(k, k): v for k, v in frame.items()}
        needed = state.policy.config.image_keys or []
        absent = [k for k in needed if k not in frame]
        if absent:
            raise ValueError(
                f"the observation lacks camera '{absent[0]}', which this policy reads (it has "
                f"{sorted(k for k in frame if k.startswith('observation.images.'))}): name the robot's camera so, "
                "or map it with the client's rename_map"
            )
        frame["task"] = raw.get("task") or ""
        return frame

    def _policy(self, path: str, device: str) -> Any:
        from .modeling_xvla_plus import XVLAPlusPolicy

        key = (str(path), str(device))
        with self.lock:
            if key not in self.policies:
                self.policies[key] = XVLAPlusPolicy.from_pretrained(path).to(device).xvla
            return self.policies[key]

    def _client(self, context) -> ClientState:
        state = self.clients.get(context.peer())
        if state is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "send the policy instructions first (RobotClient.start)"
            )
        return state

    def _trace(self, state, timed, observation, request, chunk, plan, position) -> None:
        folder = Path(self.config.trace_dir)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in observation.items() if k != "task"}
        arrays.update(chunk=np.asarray(chunk), plan=np.asarray(plan))
        if request.prefix is not None:
            arrays.update(prefix=request.prefix, prefix_weights=request.prefix_weights)
        meta = {
            "number": request.number,
            "position": position,
            "delay": request.delay,
            "task": observation["task"],
            "observation_timestep": timed.get_timestep(),
        }
        np.savez(folder / f"chunk_{request.number:05d}.npz", meta=json.dumps(meta), **arrays)


def serve(config: ServerConfig) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    services_pb2_grpc.add_AsyncInferenceServicer_to_server(XVLAAsyncServicer(config), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    server.start()
    logger.info("X-VLA LeRobot async server on %s:%d (strategy %s)", config.host, port, config.strategy)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xvla-lerobot-server", description=__doc__.split("\n\n")[0])
    for name, spec in ServerConfig.__dataclass_fields__.items():
        default = spec.default
        kind = {
            "host": str,
            "strategy": str,
            "guidance": str,
            "device": str,
            "trace_dir": str,
            "port": int,
            "execute_steps": int,
            "delay_steps": int,
            "seed": int,
        }.get(name, float)
        parser.add_argument(f"--{name}", type=kind, default=default)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = serve(ServerConfig(**vars(args)))
    print(f"READY {args.host}:{args.port}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
