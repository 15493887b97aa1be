"""Where chunks come from: an in-process policy, a remote ``xvla serve`` (through
:class:`xvla.serve.RemotePolicy`), or any callable.

A *chunk function* takes ``(observation, request)`` and returns one chunk [T, A] (numpy) in the robot's
action space. ``request`` is a :class:`~xvla.execution.scheduler.ChunkRequest`; for ``rtc`` it
carries the committed prefix, its weights and the expected delay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .scheduler import ChunkRequest

ChunkFn = Callable[[Mapping[str, Any], ChunkRequest], np.ndarray]


def chunk_seed(*parts: int) -> int:
    """The seed of one chunk's flow-matching noise, from what names the chunk: (base seed, episode, chunk
    number) here and in Meta-World rollouts, (base seed, task, episode, chunk number) in LIBERO's. It does
    not depend on batching, workers or restarts."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seeded_noise(policy: Any, seeds: Sequence[int]) -> Any:
    """[len(seeds), chunk_size, model action dim] standard normal noise, one generator per seed, on the
    policy's device; None for a policy that samples no noise (see :func:`noise_shape`)."""
    shape = noise_shape(policy)
    if shape is None:
        return None
    import torch

    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
    # A RemotePolicy has no device: the noise travels with each request as it is.
    return torch.stack(noise).to(getattr(policy, "device", "cpu"))


def predict_seeded(
    policy: Any, batch: Mapping[str, Any], seeds: Sequence[int], steps: int | None = None, **kwargs: Any
) -> np.ndarray:
    """``policy.predict_action_chunk(batch)`` with sample i's noise drawn from ``seeds[i]``, as numpy.

    The one way evaluations seed an in-process and a remote policy alike. ``steps`` goes with the noise
    (a policy without noise takes neither); ``kwargs`` (rtc's prefix) are passed on.
    """
    noise = seeded_noise(policy, seeds)
    if noise is not None:
        kwargs["noise"] = noise
        if steps is not None:
            kwargs["steps"] = steps
    chunk = policy.predict_action_chunk(batch, **kwargs)
    if hasattr(chunk, "detach"):
        chunk = chunk.detach().float().cpu().numpy()
    return np.asarray(chunk)


class PolicySource:
    """An in-process policy with ``predict_action_chunk`` (an :class:`~xvla.XVLAPolicy`).

    ``seed`` makes every chunk's noise reproducible (``chunk_seed(seed, episode, chunk number)``);
    ``observation`` is one unbatched LeRobot-style observation (HxWx3 frames, a 1-D state, ``task``).
    """

    def __init__(
        self, policy: Any, *, seed: int | None = None, steps: int | None = None, guidance: str = "inpaint"
    ):
        self.policy = policy
        self.seed = seed
        self.steps = steps
        self.guidance = guidance
        self.episode = 0
        self.accepts_prefix = _accepts(policy.predict_action_chunk, "prefix")

    def __call__(self, observation: Mapping[str, Any], request: ChunkRequest) -> np.ndarray:
        import torch

        kwargs: dict[str, Any] = {}
        if self.seed is not None:
            noise = seeded_noise(self.policy, [chunk_seed(self.seed, self.episode, request.number)])
            if noise is not None:
                kwargs["noise"] = noise
        if self.steps is not None:
            kwargs["steps"] = self.steps
        if request.prefix is not None and self.accepts_prefix:
            kwargs["prefix"] = torch.from_numpy(request.prefix).unsqueeze(0)
            kwargs["prefix_weights"] = torch.from_numpy(request.prefix_weights).unsqueeze(0)
            kwargs["guidance"] = self.guidance
        chunk = self.policy.predict_action_chunk(batch_of_one(observation), **kwargs)
        return as_chunk(chunk)


def noise_shape(policy: Any) -> tuple[int, int] | None:
    """(chunk_size, model action dim) of an X-VLA policy or a RemotePolicy; None for other policies (no noise)."""
    shape = getattr(policy, "noise_shape", None)
    if shape is not None:
        return shape
    model = getattr(policy, "model", None)
    if model is not None and hasattr(model, "chunk_size") and hasattr(model, "dim_action"):
        return int(model.chunk_size), int(model.dim_action)
    return None


def as_source(policy: Any, **kwargs: Any) -> ChunkFn:
    """A chunk function for ``policy``: an ``XVLAPolicy``-like object, a ``Client``, or a callable
    ``(observation, request) -> chunk`` (or ``observation -> chunk``)."""
    if callable(
        getattr(policy, "as_policy", None)
    ):  # a serve Client; asked by duck type: no HTTP code in here
        policy = policy.as_policy()
    if hasattr(policy, "predict_action_chunk"):
        return PolicySource(policy, **kwargs)
    if callable(policy):
        return policy if _positional_count(policy) != 1 else _ObservationOnly(policy)
    raise TypeError(
        f"cannot get action chunks from a {type(policy).__name__}: pass an XVLAPolicy, an xvla.serve.Client, "
        "or a callable (observation, request) -> chunk [T, action_dim]"
    )


def accepts_prefix(source: Any) -> bool:
    """Whether a chunk function uses rtc's prefix (else the executor applies the mask after sampling)."""
    flag = getattr(source, "accepts_prefix", None)
    return bool(flag) if flag is not None else False


def batch_of_one(observation: Mapping[str, Any]) -> dict[str, Any]:
    """One observation -> a batch of one (1-D state -> [1, S]; frames and strings as the policy takes them)."""
    out = dict(observation)
    state = out.get("observation.state")
    if state is not None and np.ndim(state) == 1:
        out["observation.state"] = np.asarray(state, dtype=np.float32)[None]
    if isinstance(out.get("task"), str):
        out["task"] = [out["task"]]
    return out


def as_chunk(chunk: Any) -> np.ndarray:
    if hasattr(chunk, "detach"):
        chunk = chunk.detach().float().cpu().numpy()
    chunk = np.asarray(chunk, dtype=np.float32)
    if chunk.ndim == 3 and chunk.shape[0] == 1:
        chunk = chunk[0]
    if chunk.ndim != 2:
        raise ValueError(f"the policy returned a chunk of shape {chunk.shape}; expected [T, action_dim]")
    return chunk


class _ObservationOnly:
    """A callable ``observation -> chunk`` (no request): it cannot take rtc's prefix."""

    accepts_prefix = False

    def __init__(self, fn: Callable[[Mapping[str, Any]], Any]):
        self.fn = fn

    def __call__(self, observation: Mapping[str, Any], request: ChunkRequest) -> np.ndarray:
        return as_chunk(self.fn(observation))


def _positional_count(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return -1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return -1
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)


def _accepts(fn: Callable, name: str) -> bool:
    """Only a parameter named so counts: a policy that swallows ``**kwargs`` may ignore the prefix."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
