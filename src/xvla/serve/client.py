"""Clients for the xvla policy server: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

    from xvla.serve import Client

    with Client("http://127.0.0.1:8010") as client:
        chunk = client.act({
            "observation.images.front": frame,          # HxWx3 uint8 (or 3xHxW, or float in [0, 1])
            "observation.state": state,                 # 1-D, at most max_state_dim values
            "task": "pick up the red block",
            "domain_id": 3,
        }, seed=0)                                      # -> np.ndarray [chunk_size, action_dim]

Arrays travel in the ``json_numpy`` wire form (base64 of the raw bytes + dtype + shape); frames can
be sent as PNG or JPEG instead (``image_format="png"|"jpeg"``) to cut the upload size.
"""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .protocol import IMAGE_PREFIX, OBSERVATION_KEYS, STATE_KEY

DEFAULT_URL = "http://127.0.0.1:8010"
# Send small requests at once (as requests/urllib3 do) instead of waiting on Nagle + delayed ACKs.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class ServerError(RuntimeError):
    """The server answered with an error status; ``detail`` says why, ``request_id`` finds it in the log."""

    def __init__(self, status: int, detail: str, field: str | None = None, request_id: str | None = None):
        super().__init__(f"HTTP {status}: {detail}" + (f" (request id {request_id})" if request_id else ""))
        self.status = status
        self.detail = detail
        self.field = field
        self.request_id = request_id


# ------------------------------------------------------------------------------------------ encoding
def encode_array(array: Any) -> dict[str, Any]:
    """A numpy array (or tensor) -> the ``json_numpy`` dict form: {"__numpy__", "dtype", "shape"}."""
    array = _to_numpy(array)
    data = np.ascontiguousarray(array)
    return {
        "__numpy__": base64.b64encode(data.tobytes()).decode("ascii"),
        "dtype": np.lib.format.dtype_to_descr(data.dtype),
        "shape": list(data.shape),
    }


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def frame_to_uint8_hwc(image: Any) -> np.ndarray:
    """CHW or HWC, uint8 or float in [0, 1], with or without a batch dim of 1 -> HxWx3 uint8."""
    array = _to_numpy(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"an image must be HxWx3 or 3xHxW (one frame), got shape {array.shape}")
    if array.shape[-1] != 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError("the image contains NaN or infinite values")
        if array.max(initial=0.0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def encode_image(image: Any, image_format: str = "raw", jpeg_quality: int = 95) -> dict[str, Any]:
    frame = frame_to_uint8_hwc(image)
    if image_format == "raw":
        return encode_array(frame)
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format={image_format!r} is invalid: choose 'raw', 'png' or 'jpeg'")
    from PIL import Image

    buf = io.BytesIO()
    options = {"quality": int(jpeg_quality)} if image_format == "jpeg" else {}
    Image.fromarray(frame).save(buf, format=image_format.upper(), **options)
    return encode_array(np.frombuffer(buf.getvalue(), dtype=np.uint8))


def observation_to_wire(
    observation: Mapping[str, Any],
    image_format: str = "raw",
    jpeg_quality: int = 95,
    pass_unknown_keys: bool = False,
) -> dict:
    """One LeRobot-style observation (unbatched, or batch of 1) -> the /v1/act JSON form.

    Keys follow the server's schema (:data:`xvla.serve.protocol.OBSERVATION_KEYS`); any other key is
    refused, or sent as is with ``pass_unknown_keys=True`` (for a server that knows more keys)."""
    out: dict[str, Any] = {}
    for key, value in observation.items():
        if value is None:  # the server reads a null as an absent key
            continue
        kind = OBSERVATION_KEYS.get(key, "image" if str(key).startswith(IMAGE_PREFIX) else None)
        if kind is None and not pass_unknown_keys:
            raise ValueError(
                f"observation key {key!r} is not part of the /v1/act schema ('{IMAGE_PREFIX}<camera>', "
                f"{list(OBSERVATION_KEYS)}): rename it, or pass Client(..., pass_unknown_keys=True) to send it as is"
            )
        out[key] = _encode_value(key, kind, value, image_format, jpeg_quality)
    return out


def _encode_value(key: str, kind: str | None, value: Any, image_format: str, jpeg_quality: int) -> Any:
    if kind == "image":
        return encode_image(value, image_format, jpeg_quality)
    if key == STATE_KEY:
        state = _to_numpy(value).astype(np.float32)
        return encode_array(state.reshape(-1) if state.ndim == 2 and state.shape[0] == 1 else state)
    if kind == "array":
        return encode_array(_to_numpy(value).astype(np.float32))
    if kind == "int":
        flat = _to_numpy(value).reshape(-1)
        if flat.size != 1:
            raise ValueError(f"observation key {key!r} must be one integer, got {flat.size} values")
        return int(flat[0])
    if kind == "text":
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise ValueError(f"observation key {key!r} must be a string, got {type(value).__name__}")
        return value
    # An unknown key passed through: arrays in the json_numpy form, anything else as JSON takes it.
    return encode_array(value) if hasattr(value, "shape") else value


def with_prefix(
    observation: Mapping[str, Any],
    prefix: Any = None,
    delay: int | None = None,
    prefix_weights: Any = None,
    guidance: str | None = None,
) -> Mapping[str, Any]:
    """Attach a committed action prefix (real-time chunking) to one observation for /v1/act.

    ``prefix`` [d, action_dim]: the actions the robot will execute from this observation on;
    ``delay``: control steps until the new chunk arrives (those actions get weight 1, the rest of the
    prefix a decaying weight), or explicit ``prefix_weights`` [d]; ``guidance``: "inpaint" or "guided".
    """
    extra = {
        k: v
        for k, v in (
            ("prefix", prefix),
            ("delay", delay),
            ("prefix_weights", prefix_weights),
            ("guidance", guidance),
        )
        if v is not None
    }
    if extra and prefix is None:
        raise ValueError(
            "delay, prefix_weights and guidance only apply to a prefix: pass prefix=the committed actions"
        )
    return {**observation, **extra} if extra else observation


def _act_body(
    observations: Sequence[Mapping[str, Any]],
    seed: int | None,
    noise: Any,
    steps: int | None,
    image_format: str,
    jpeg_quality: int,
    pass_unknown_keys: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "observations": [
            observation_to_wire(o, image_format, jpeg_quality, pass_unknown_keys) for o in observations
        ]
    }
    if seed is not None:
        body["seed"] = int(seed)
    if noise is not None:
        body["noise"] = encode_array(_to_numpy(noise).astype(np.float32))
    if steps is not None:
        body["steps"] = int(steps)
    return body


def _official_body(
    images: Sequence[Any],
    proprio: Any,
    instruction: str,
    domain_id: int,
    steps: int | None,
    seed: int | None = None,
    noise: Any = None,
) -> dict[str, Any]:
    import json

    body: dict[str, Any] = {
        "proprio": json.dumps(encode_array(_to_numpy(proprio).astype(np.float32))),
        "language_instruction": instruction,
        "domain_id": int(domain_id),
    }
    for i, image in enumerate(images):
        body[f"image{i}"] = json.dumps(encode_array(frame_to_uint8_hwc(image)))
    if steps is not None:
        body["steps"] = int(steps)
    if (
        seed is not None
    ):  # extensions of the official API (reproducible sampling); official servers ignore them
        body["seed"] = int(seed)
    if noise is not None:
        body["noise"] = encode_array(_to_numpy(noise).astype(np.float32))
    return body


def _check(response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    if response.status_code >= 400:
        body = body if isinstance(body, dict) else {"detail": str(body)}
        raise ServerError(
            response.status_code,
            str(body.get("detail", body)),
            body.get("field"),
            body.get("request_id") or response.headers.get("x-request-id"),
        )
    return body


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# ------------------------------------------------------------------------------------------ clients
class Client:
    """Blocking client (httpx). ``act`` returns one chunk [chunk_size, action_dim] as float32.

    An observation key outside the /v1/act schema raises ValueError; ``pass_unknown_keys=True`` sends it as is."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        image_format: str = "raw",
        jpeg_quality: int = 95,
        pass_unknown_keys: bool = False,
        **httpx_kwargs: Any,
    ):
        import httpx

        self.url = url.rstrip("/")
        self.pass_unknown_keys = (
            pass_unknown_keys  # send keys outside the /v1/act schema instead of refusing them
        )
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.last_timing: dict[str, Any] | None = None
        httpx_kwargs.setdefault("transport", httpx.HTTPTransport(socket_options=NODELAY))
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=_headers(api_key), **httpx_kwargs
        )

    def act(
        self,
        observation: Mapping[str, Any],
        *,
        seed: int | None = None,
        noise: Any = None,
        steps: int | None = None,
        prefix: Any = None,
        delay: int | None = None,
        prefix_weights: Any = None,
        guidance: str | None = None,
    ) -> np.ndarray:
        """One chunk; ``prefix``/``delay``/``prefix_weights``/``guidance``: see :func:`with_prefix`."""
        noise = None if noise is None else _to_numpy(noise).reshape(1, *_to_numpy(noise).shape[-2:])
        observation = with_prefix(observation, prefix, delay, prefix_weights, guidance)
        return self.act_batch([observation], seed=seed, noise=noise, steps=steps)[0]

    def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        *,
        seed: int | None = None,
        noise: Any = None,
        steps: int | None = None,
    ) -> np.ndarray:
        """Several observations (each its own robot / domain) in one request -> [B, chunk, action_dim]."""
        body = _act_body(
            observations, seed, noise, steps, self.image_format, self.jpeg_quality, self.pass_unknown_keys
        )
        out = _check(self._http.post("/v1/act", json=body))
        self.last_timing = out.get("timing")
        return np.asarray(out["actions"], dtype=np.float32)

    def act_official(
        self,
        images: Sequence[Any],
        proprio: Any,
        instruction: str,
        domain_id: int,
        steps: int | None = None,
        *,
        seed: int | None = None,
        noise: Any = None,
    ) -> np.ndarray:
        """The official ``/act`` call (image0..2, proprio, language_instruction, domain_id) -> [chunk, dim].

        ``seed`` / ``noise`` ([chunk, model action dim]) make the sampling reproducible (xvla servers only)."""
        body = _official_body(images, proprio, instruction, domain_id, steps, seed, noise)
        out = _check(self._http.post("/act", json=body))
        return np.asarray(out["action"], dtype=np.float32)

    def health(self) -> dict[str, Any]:
        return _check(self._http.get("/health"))

    def info(self) -> dict[str, Any]:
        return _check(self._http.get("/info"))

    def as_policy(self, **kwargs: Any) -> RemotePolicy:
        """This server behind ``predict_action_chunk`` (:class:`RemotePolicy`), for code that takes a policy."""
        return RemotePolicy(self, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of :class:`Client` (``await client.act(...)``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        image_format: str = "raw",
        jpeg_quality: int = 95,
        pass_unknown_keys: bool = False,
        **httpx_kwargs: Any,
    ):
        import httpx

        self.url = url.rstrip("/")
        self.pass_unknown_keys = (
            pass_unknown_keys  # send keys outside the /v1/act schema instead of refusing them
        )
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.last_timing: dict[str, Any] | None = None
        httpx_kwargs.setdefault("transport", httpx.AsyncHTTPTransport(socket_options=NODELAY))
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers=_headers(api_key), **httpx_kwargs
        )

    async def act(
        self,
        observation: Mapping[str, Any],
        *,
        seed: int | None = None,
        noise: Any = None,
        steps: int | None = None,
        prefix: Any = None,
        delay: int | None = None,
        prefix_weights: Any = None,
        guidance: str | None = None,
    ) -> np.ndarray:
        noise = None if noise is None else _to_numpy(noise).reshape(1, *_to_numpy(noise).shape[-2:])
        observation = with_prefix(observation, prefix, delay, prefix_weights, guidance)
        return (await self.act_batch([observation], seed=seed, noise=noise, steps=steps))[0]

    async def act_batch(
        self,
        observations: Sequence[Mapping[str, Any]],
        *,
        seed: int | None = None,
        noise: Any = None,
        steps: int | None = None,
    ) -> np.ndarray:
        body = _act_body(
            observations, seed, noise, steps, self.image_format, self.jpeg_quality, self.pass_unknown_keys
        )
        out = _check(await self._http.post("/v1/act", json=body))
        self.last_timing = out.get("timing")
        return np.asarray(out["actions"], dtype=np.float32)

    async def act_official(
        self,
        images: Sequence[Any],
        proprio: Any,
        instruction: str,
        domain_id: int,
        steps: int | None = None,
        *,
        seed: int | None = None,
        noise: Any = None,
    ) -> np.ndarray:
        body = _official_body(images, proprio, instruction, domain_id, steps, seed, noise)
        out = _check(await self._http.post("/act", json=body))
        return np.asarray(out["action"], dtype=np.float32)

    async def health(self) -> dict[str, Any]:
        return _check(await self._http.get("/health"))

    async def info(self) -> dict[str, Any]:
        return _check(await self._http.get("/info"))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ------------------------------------------------------------------------------------ remote policy
class RemotePolicy:
    """A running policy server behind :meth:`xvla.XVLAPolicy.predict_action_chunk`, so simulator evaluation
    and the real-time executor take an in-process and a remote policy alike.

    Each sample of a batch is its own request and they go out concurrently, so the server's batcher can
    merge them. The flow-matching noise travels with each request (an extension of the official API), so
    a run through the server gives the chunks the in-process policy gives with the same weights.

    A sample goes to ``/v1/act`` as a LeRobot-style observation (cameras by name; rtc's ``prefix``). With
    ``cameras`` it goes to the official ``/act`` instead, those cameras as image0, image1, ... in order:
    the form every X-VLA server takes, whatever its checkpoint names its cameras.
    """

    def __init__(
        self,
        server: str | Client,
        *,
        cameras: Sequence[str] | None = None,
        timeout: float = 120.0,
        max_workers: int = 16,
    ):
        from concurrent.futures import ThreadPoolExecutor

        self._owns_client = not isinstance(server, Client)
        self.client = Client(server, timeout=timeout) if self._owns_client else server
        self.cameras = tuple(cameras) if cameras else None
        self.info = self.client.info()
        self.noise_shape = (int(self.info["chunk_size"]), int(self.info["model_action_dim"]))
        # How many actions of a chunk to execute before asking again: the served checkpoint's setting, so a
        # rollout through the server executes chunks as one with the in-process policy does (None: not reported).
        self.n_action_steps = self.info.get("n_action_steps")
        self._pool = ThreadPoolExecutor(max_workers=max_workers)

    def predict_action_chunk(
        self,
        batch: Mapping[str, Any],
        noise: Any = None,
        steps: int | None = None,
        prefix: Any = None,
        prefix_weights: Any = None,
        guidance: str = "inpaint",
    ) -> np.ndarray:
        """[B, chunk_size, action_dim] float32; ``noise`` [B, chunk_size, model action dim]; ``prefix``
        [B, d, action_dim] with ``prefix_weights`` [B, d] (real-time chunking, ``/v1/act`` only)."""
        if prefix is not None and self.cameras:
            raise ValueError("the official /act takes no prefix: build RemotePolicy without cameras= for rtc")
        n = _batch_size(batch)
        futures = [
            self._pool.submit(
                self._act,
                {k: _sample(v, i, n) for k, v in batch.items()},
                _sample(noise, i, n),
                steps,
                _sample(prefix, i, n),
                _sample(prefix_weights, i, n),
                guidance,
            )
            for i in range(n)
        ]
        return np.stack([f.result() for f in futures])

    def _act(
        self,
        sample: dict[str, Any],
        noise: Any,
        steps: int | None,
        prefix: Any,
        prefix_weights: Any,
        guidance: str,
    ) -> np.ndarray:
        if not self.cameras:
            return self.client.act(
                sample,
                noise=noise,
                steps=steps,
                prefix=prefix,
                prefix_weights=prefix_weights,
                guidance=None if prefix is None else guidance,
            )
        if sample.get("domain_id") is None:
            raise ValueError("the official /act needs a domain_id: add 'domain_id' to the batch")
        images = [sample[key] for key in self.cameras]
        domain = int(_to_numpy(sample["domain_id"]).reshape(-1)[0])
        task = sample["task"][0] if isinstance(sample["task"], (list, tuple)) else sample["task"]
        return self.client.act_official(images, sample[STATE_KEY], task, domain, steps, noise=noise)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _batch_size(batch: Mapping[str, Any]) -> int:
    task = batch.get("task")
    if isinstance(task, (list, tuple)):
        return len(task)
    state = batch.get(STATE_KEY)
    return int(_to_numpy(state).shape[0]) if state is not None and _to_numpy(state).ndim == 2 else 1


def _sample(value: Any, i: int, n: int) -> Any:
    """Sample ``i`` of a batched value; a value without a leading batch dimension (a shared task, a scalar
    domain id, the unbatched frame of a batch of one) is every sample's."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return value[i] if len(value) == n else value
    array = _to_numpy(value)
    return array[i] if array.ndim and array.shape[0] == n else array
