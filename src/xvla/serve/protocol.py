"""The wire protocol: untrusted JSON payloads -> validated observations (numpy only, no web framework).

Two request forms are understood:

- the official X-VLA ``POST /act`` body: ``image0``..``image2``, ``proprio``, ``language_instruction``,
  ``domain_id``, optional ``steps`` (each array a ``json_numpy``-encoded string);
- our native ``POST /v1/act`` body: a list of observations in LeRobot key form, with optional seeds
  or explicit noise.

Arrays arrive in the form the ``json_numpy`` package writes: ``{"__numpy__": <base64 of the raw
bytes>, "dtype": <numpy descr, e.g. "|u1">, "shape": [...]}``, usually itself serialised to a JSON
string. We parse that form ourselves instead of calling ``json_numpy.loads``: the dtype is checked
against an allow-list (no object or structured dtypes) and the declared shape and byte count are
checked against size limits *before* anything is decoded or allocated. Plain (nested) JSON lists
of numbers are accepted as well.

Every problem raises :class:`RequestError` with an HTTP status, the offending field and a message
that says what was expected; the server turns it into a 4xx answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..domains import check_domain_ids
from ..flags import documented

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
# The /v1/act observation schema, in one place: the server's parser refuses any other key, and the
# client encodes each key by its kind ("array", "int" or "text"). Cameras are IMAGE_PREFIX + a name.
OBSERVATION_KEYS: dict[str, str] = {
    STATE_KEY: "array",
    "task": "text",
    "domain_id": "int",
    "robot": "text",
    "seed": "int",
    "noise": "array",
    "prefix": "array",
    "prefix_weights": "array",
    "delay": "int",
    "guidance": "text",
}
OFFICIAL_IMAGE_KEYS = ("image0", "image1", "image2")
_EXTRA_IMAGE_KEY = re.compile(r"^image[0-9]+$")
_DECIMAL = re.compile(r"^\s*[+-]?[0-9]{1,19}\s*$")
MAX_SEED = 2**63 - 1


class RequestError(Exception):
    """A client mistake: answered with ``status`` (4xx) and a message naming ``field``."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds checked before decoding anything a client sends."""

    max_image_side: int = documented(4096, "largest image side in pixels, raw or encoded (413 above it)")
    max_image_pixels: int = documented(4096 * 4096, "largest image area in pixels")
    max_instruction_chars: int = documented(4096, "longest instruction in characters")
    max_observations: int = documented(64, "most observations in one /v1/act request")
    max_steps: int = 100
    # Larger state or noise entries are no robot state and overflow the model.
    max_abs_value: float = documented(1e6, "largest absolute state or noise entry accepted")


@dataclass(frozen=True)
class ModelSpec:
    """What a request is validated against (derived from the loaded checkpoint and server settings)."""

    proprio_dim: int
    use_proprio: bool
    num_domains: int
    allowed_domains: frozenset[int]
    default_domain_id: int
    max_views: int
    chunk_size: int
    model_action_dim: int
    default_steps: int
    image_keys: tuple[str, ...] | None = None
    encoded_channel_order: str = "rgb"  # "bgr" reproduces the official server's cv2.imdecode
    limits: Limits = field(default_factory=Limits)
    action_dim: int | None = None  # the robot's action width (a committed prefix has it); None = model width
    robots: tuple[tuple[str, int], ...] = ()  # robot name -> domain id (the domain table and loaded adapters)
    domain_action_dims: tuple[tuple[int, int], ...] = ()  # domains whose robot (an adapter) has another width

    def action_dim_for(self, domain: int) -> int:
        return dict(self.domain_action_dims).get(domain) or self.action_dim or self.model_action_dim


@dataclass
class Observation:
    """One validated sample, ready for :meth:`xvla.serve.engine.ServeEngine.prepare`."""

    images: list[np.ndarray]  # HxWx3 uint8, view 0 first
    state: np.ndarray | None  # 1-D float32 (unpadded) or None when the model ignores proprioception
    task: str
    domain_id: int
    steps: int
    seed: int | None = None
    noise: np.ndarray | None = None  # [chunk, model action dim] float32
    prefix: np.ndarray | None = (
        None  # [d, action dim] float32: actions the robot committed to (real-time chunking)
    )
    prefix_weights: np.ndarray | None = None  # [d] float32 in [0, 1]
    guidance: str = "inpaint"


# ------------------------------------------------------------------------------------------ JSON body
def parse_json_body(body: bytes) -> dict[str, Any]:
    """Raw request body -> a JSON object (400 for anything that is not JSON, 422 for a non-object)."""
    if not body:
        raise RequestError("body", "the request body is empty; send a JSON object", status=400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            "body", f"the request body is not UTF-8 text ({exc.reason} at byte {exc.start})", 400
        ) from None
    payload = _loads(text, "body", status=400)
    if not isinstance(payload, dict):
        raise RequestError("body", f"expected a JSON object at the top level, got {_json_type(payload)}")
    return payload


def _loads(text: str, field: str, status: int = 422) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _ConstantError as exc:
        raise RequestError(field, f"{exc} is not valid JSON; send finite numbers", status) from None
    except RecursionError:
        raise RequestError(field, "the JSON is nested too deeply", status) from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise RequestError(field, f"invalid JSON ({exc})", status) from None


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # json accepts NaN / Infinity literals by default; they are not JSON and never valid input here.
    raise _ConstantError(name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ------------------------------------------------------------------------------------------ arrays
_KIND_NAMES = {"u": "unsigned integer", "i": "integer", "f": "float", "b": "boolean"}


def decode_array(
    value: Any, field: str, kinds: str, max_elements: int, max_ndim: int = 4, expected: str | None = None
) -> np.ndarray:
    """A json_numpy string/dict or a JSON list of numbers -> a numpy array (validated, not yet shaped).

    ``kinds`` is the set of allowed numpy dtype kinds ("u", "i", "f"); ``expected`` describes the
    wanted values in error messages (default: from ``kinds``).
    """
    expected = expected or f"{_describe_kinds(kinds)} values"
    if isinstance(value, str):
        if len(value) > 8 * max_elements + 4096:  # base64 of 8-byte items plus the header, generously
            raise RequestError(
                field, f"the encoded array is too large (more than {max_elements} elements)", 413
            )
        value = _loads(value, field)
    if isinstance(value, dict):
        return _decode_numpy_dict(value, field, kinds, max_elements, max_ndim, expected)
    if isinstance(value, list):
        return _decode_list(value, field, kinds, max_elements, max_ndim, expected)
    raise RequestError(
        field,
        f"expected an array (a json_numpy-encoded string or a list of numbers), got {_json_type(value)}",
    )


def _decode_numpy_dict(
    value: dict, field: str, kinds: str, max_elements: int, max_ndim: int, expected: str
) -> np.ndarray:
    missing = [k for k in ("__numpy__", "dtype", "shape") if k not in value]
    if missing:
        raise RequestError(
            field, f"not a json_numpy array: missing {missing} (expected {{'__numpy__', 'dtype', 'shape'}})"
        )
    data, descr, shape = value["__numpy__"], value["dtype"], value["shape"]
    if not isinstance(descr, str) or len(descr) > 16:
        raise RequestError(
            field, f"json_numpy 'dtype' must be a simple numpy type string like '|u1', got {descr!r:.40}"
        )
    try:
        dtype = np.dtype(descr)
    except Exception:  # noqa: BLE001 - numpy raises several types for junk type strings
        raise RequestError(field, f"json_numpy 'dtype' {descr!r} is not a numpy dtype") from None
    if (
        dtype.kind not in kinds
        or dtype.itemsize > 8
        or dtype.fields is not None
        or dtype.subdtype is not None
    ):
        raise RequestError(field, f"dtype {descr!r} is not allowed: expected {expected}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(field, f"json_numpy 'shape' must be a list of integers, got {shape!r:.60}")
    if len(shape) > max_ndim:
        raise RequestError(field, f"the array has {len(shape)} dimensions, at most {max_ndim} are allowed")
    if any(d < 0 for d in shape):
        raise RequestError(field, f"json_numpy 'shape' {shape} has a negative dimension")
    count = math.prod(shape)
    if count > max_elements:
        raise RequestError(
            field, f"the array shape {shape} has {count} elements, at most {max_elements} are allowed", 413
        )
    if not isinstance(data, str):
        raise RequestError(field, f"json_numpy '__numpy__' must be a base64 string, got {_json_type(data)}")
    nbytes = count * dtype.itemsize
    if len(data) != 4 * ((nbytes + 2) // 3):
        raise RequestError(
            field,
            f"json_numpy data holds {len(data)} base64 characters, but shape {shape} with dtype {descr!r} "
            f"needs {nbytes} bytes ({4 * ((nbytes + 2) // 3)} base64 characters)",
        )
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RequestError(field, "json_numpy '__numpy__' is not valid base64") from None
    if len(raw) != nbytes:
        raise RequestError(field, f"json_numpy data has {len(raw)} bytes but shape {shape} needs {nbytes}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    # A writable, native-endian copy (frombuffer views are read-only; torch warns on them).
    return array.astype(dtype.newbyteorder("="), copy=True)


def _decode_list(
    value: list, field: str, kinds: str, max_elements: int, max_ndim: int, expected: str
) -> np.ndarray:
    count, depth = _count_list(value, max_elements, max_ndim)
    if count > max_elements:
        raise RequestError(field, f"the list has more than {max_elements} elements", 413)
    if depth > max_ndim:
        raise RequestError(field, f"the list is nested {depth} levels deep, at most {max_ndim} are allowed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            field, "the list is ragged or holds non-numbers: expected a rectangular array of numbers"
        ) from None
    if array.dtype.kind not in kinds:
        got = _KIND_NAMES.get(array.dtype.kind, "non-numeric")
        raise RequestError(field, f"the list holds {got} values: expected {expected}")
    return array


def _count_list(value: list, limit: int, max_ndim: int) -> tuple[int, int]:
    """Count leaves and depth without recursion, stopping early once past the limits."""
    count, depth = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, list):
            depth = max(depth, level)
            if depth > max_ndim:
                return count, depth
            stack.extend((x, level + 1) for x in item)
        else:
            count += 1
            if count > limit:
                return count, depth
    return count, depth


def _describe_kinds(kinds: str) -> str:
    if kinds == "u":
        return "uint8"
    return " or ".join(_KIND_NAMES[k] for k in kinds)


# ------------------------------------------------------------------------------------------ images
def decode_image(value: Any, field: str, spec: ModelSpec, allow_chw: bool = False) -> np.ndarray:
    """An image field -> HxWx3 uint8.

    Accepted: an HxWx3 uint8 array (3xHxW too when ``allow_chw``), a JSON list of integers in
    [0, 255] of that shape, or a 1-D uint8 array holding the bytes of a JPEG or PNG file.
    """
    lim = spec.limits
    max_elements = max(lim.max_image_pixels * 3, 1)
    expected = (
        "an HxWx3 uint8 image"
        + (" (or 3xHxW)" if allow_chw else "")
        + " or a 1-D uint8 array of JPEG/PNG bytes"
    )
    array = decode_array(value, field, kinds="uif", max_elements=max_elements, max_ndim=3, expected=expected)
    if array.dtype.kind != "u" or array.dtype.itemsize != 1:
        if (
            array.dtype.kind in "iu"
            and array.size
            and array.min() >= 0
            and array.max() <= 255
            and _from_list(value)
        ):
            array = array.astype(np.uint8)  # a JSON list of small integers
        elif array.dtype.kind in "iu" and not array.size and _from_list(value):
            array = array.astype(np.uint8)
        else:
            raise RequestError(
                field, f"expected {expected}; got dtype {array.dtype} with shape {list(array.shape)}"
            )
    if array.ndim == 1:
        return _decode_encoded_image(array, field, spec)
    if array.ndim == 3 and array.shape[-1] != 3 and allow_chw and array.shape[0] == 3:
        array = np.ascontiguousarray(array.transpose(1, 2, 0))
    if array.ndim != 3 or array.shape[-1] != 3:
        raise RequestError(field, f"expected {expected}; got shape {list(array.shape)}")
    _check_image_size(array.shape[0], array.shape[1], field, lim)
    return array


def _from_list(value: Any) -> bool:
    if isinstance(value, str):
        return value.lstrip().startswith("[")
    return isinstance(value, list)


def _check_image_size(height: int, width: int, field: str, lim: Limits) -> None:
    if height < 1 or width < 1:
        raise RequestError(field, f"the image is empty ({height}x{width}); expected at least 1x1 pixels")
    if height > lim.max_image_side or width > lim.max_image_side or height * width > lim.max_image_pixels:
        raise RequestError(
            field,
            f"the image is {height}x{width}; at most {lim.max_image_side} pixels per side and "
            f"{lim.max_image_pixels} pixels in all are allowed",
            413,
        )


def _decode_encoded_image(data: np.ndarray, field: str, spec: ModelSpec) -> np.ndarray:
    from PIL import Image

    if data.size == 0:
        raise RequestError(field, "the encoded image is empty; expected the bytes of a JPEG or PNG file")
    try:
        with Image.open(io.BytesIO(data.tobytes()), formats=["JPEG", "PNG"]) as img:
            # The header is read lazily: check the size before any pixel is decoded.
            _check_image_size(img.size[1], img.size[0], field, spec.limits)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                rgb = np.array(img.convert("RGB"), dtype=np.uint8)
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt files
        raise RequestError(
            field,
            f"the 1-D uint8 array is not a decodable JPEG or PNG file ({type(exc).__name__}: {str(exc)[:120]})",
        ) from None
    if spec.encoded_channel_order == "bgr":
        rgb = np.ascontiguousarray(rgb[..., ::-1])
    return rgb


# ------------------------------------------------------------------------------------------ scalars
def parse_int(value: Any, field: str, expected: str) -> int:
    """An integer (or an integral float, or a decimal string, as ``int()`` in the official server takes)."""
    if isinstance(value, bool):
        raise RequestError(field, f"expected {expected}, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DECIMAL.match(value):
        return int(value.strip())
    shown = f"{value!r:.40}" if isinstance(value, (str, float)) else _json_type(value)
    raise RequestError(field, f"expected {expected}, got {shown}")


def parse_domain_id(value: Any, field: str, spec: ModelSpec) -> int:
    top = spec.num_domains - 1
    domain = parse_int(value, field, f"an integer domain id in [0, {top}]")
    if not 0 <= domain <= top:
        domain = max(-1, min(domain, top + 1))  # huge values are shown clipped
        try:
            check_domain_ids(domain, spec.num_domains)
        except ValueError as exc:
            raise RequestError(field, str(exc)) from None
    if domain not in spec.allowed_domains:
        raise RequestError(
            field,
            f"domain_id {domain} is not one this checkpoint was trained for; this server accepts "
            f"{sorted(spec.allowed_domains)} (start it with --domain-ids to serve other ids on purpose)",
        )
    return domain


def parse_steps(value: Any, field: str, spec: ModelSpec) -> int:
    if value is None:
        return spec.default_steps
    top = spec.limits.max_steps
    steps = parse_int(value, field, f"an integer number of denoising steps in [1, {top}]")
    if not 1 <= steps <= top:
        shown = str(steps) if abs(steps) < 10**12 else f"{str(steps)[:12]}..."
        raise RequestError(field, f"steps={shown} is out of range: expected an integer in [1, {top}]")
    return steps


def parse_seed(value: Any, field: str) -> int | None:
    if value is None:
        return None
    seed = parse_int(value, field, f"an integer seed in [0, {MAX_SEED}]")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError(field, f"seed {seed} is out of range: expected an integer in [0, {MAX_SEED}]")
    return seed


def parse_text(value: Any, field: str, spec: ModelSpec) -> str:
    if not isinstance(value, str):
        raise RequestError(field, f"expected the instruction as a string, got {_json_type(value)}")
    top = spec.limits.max_instruction_chars
    if len(value) > top:
        raise RequestError(field, f"the instruction has {len(value)} characters, at most {top} are allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates ("\ud800") are valid JSON but not text a tokenizer takes
        raise RequestError(
            field, "the instruction holds invalid Unicode (a lone surrogate); send UTF-8 text"
        ) from None
    return value


def parse_state(value: Any, field: str, spec: ModelSpec) -> np.ndarray:
    """Robot state: 1-D (or 1xS) finite numbers, at most ``proprio_dim`` of them (shorter is zero-padded later)."""
    width = spec.proprio_dim
    array = decode_array(value, field, kinds="uif", max_elements=1 << 20, max_ndim=2)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise RequestError(
            field, f"expected a 1-D array of at most {width} numbers, got shape {list(array.shape)}"
        )
    if array.shape[0] == 0:
        raise RequestError(field, f"the state is empty: expected 1 to {width} numbers")
    if array.shape[0] > width:
        raise RequestError(
            field,
            f"has {array.shape[0]} values but this checkpoint expects at most {width} (max_state_dim={width}); "
            "shorter states are zero-padded",
        )
    state = array.astype(np.float64)
    if not np.isfinite(state).all():
        raise RequestError(field, "contains NaN or infinite values; expected finite numbers")
    _check_magnitude(state, field, spec)
    return state.astype(np.float32)


def _check_magnitude(array: np.ndarray, field: str, spec: ModelSpec) -> None:
    top = spec.limits.max_abs_value
    if array.size and float(np.abs(array).max()) > top:
        raise RequestError(
            field,
            f"has a value of magnitude {float(np.abs(array).max()):.3g}; expected values within +-{top:g}",
        )


def parse_noise(value: Any, field: str, spec: ModelSpec, batch: int | None = None) -> np.ndarray:
    """Explicit initial noise: [chunk, model action dim] (or [B, chunk, dim] when ``batch`` is given)."""
    shape = (
        [spec.chunk_size, spec.model_action_dim]
        if batch is None
        else [batch, spec.chunk_size, spec.model_action_dim]
    )
    array = decode_array(value, field, kinds="uif", max_elements=math.prod(shape), max_ndim=len(shape))
    if list(array.shape) != shape:
        raise RequestError(
            field, f"expected noise of shape {shape} (chunk_size x model action dim), got {list(array.shape)}"
        )
    noise = array.astype(np.float64)
    if not np.isfinite(noise).all():
        raise RequestError(field, "contains NaN or infinite values; expected finite numbers")
    _check_magnitude(noise, field, spec)
    return noise.astype(np.float32)


# ------------------------------------------------------------------------------------------ requests
def parse_official(payload: dict[str, Any], spec: ModelSpec) -> Observation:
    """The official ``/act`` body. Unknown keys are ignored, as the official server does."""
    images = []
    extra = sorted(k for k in payload if _EXTRA_IMAGE_KEY.match(k) and k not in OFFICIAL_IMAGE_KEYS)
    if extra:
        raise RequestError(
            extra[0], f"too many images: the /act API takes at most 3 ({list(OFFICIAL_IMAGE_KEYS)})"
        )
    present = [k for k in OFFICIAL_IMAGE_KEYS if payload.get(k) is not None]
    if not present:
        raise RequestError(
            "image0",
            "no image: send at least 'image0' (a json_numpy-encoded HxWx3 uint8 array or JPEG/PNG bytes)",
        )
    if len(present) > spec.max_views:
        raise RequestError(
            present[spec.max_views],
            f"too many images: {len(present)} given ({present}), this model takes at most {spec.max_views} views",
        )
    for key in present:
        images.append(decode_image(payload[key], key, spec))
    if "language_instruction" not in payload:
        raise RequestError("language_instruction", "missing: send the task instruction as a string")
    task = parse_text(payload["language_instruction"], "language_instruction", spec)
    state = None
    if spec.use_proprio:
        if payload.get("proprio") is None:
            raise RequestError(
                "proprio", f"missing: send the robot state (1 to {spec.proprio_dim} numbers, json_numpy)"
            )
        state = parse_state(payload["proprio"], "proprio", spec)
    domain = _domain_or_default(payload.get("domain_id"), "domain_id", spec)
    steps = parse_steps(payload.get("steps"), "steps", spec)
    # Extensions (not sent by official clients): reproducible sampling.
    seed = parse_seed(payload.get("seed"), "seed")
    noise = parse_noise(payload["noise"], "noise", spec) if payload.get("noise") is not None else None
    return Observation(
        images=images, state=state, task=task, domain_id=domain, steps=steps, seed=seed, noise=noise
    )


def parse_native(payload: dict[str, Any], spec: ModelSpec) -> list[Observation]:
    """The native ``/v1/act`` body: ``{"observations": [...]}`` (or ``"observation": {...}``), ``seed``,
    ``noise``, ``steps``. An observation may carry a committed action ``prefix`` with its ``delay``
    (or ``prefix_weights``) and ``guidance`` (real-time chunking)."""
    if "observations" in payload:
        raw = payload["observations"]
        if not isinstance(raw, list):
            raise RequestError(
                "observations", f"expected a list of observation objects, got {_json_type(raw)}"
            )
    elif "observation" in payload:
        raw = [payload["observation"]]
    else:
        raise RequestError(
            "observations", "missing: send 'observations' (a list of LeRobot-style observation objects)"
        )
    if not raw:
        raise RequestError("observations", "the list is empty; send at least one observation")
    top = spec.limits.max_observations
    if len(raw) > top:
        raise RequestError(
            "observations", f"{len(raw)} observations in one request, at most {top} are allowed", 413
        )
    steps = parse_steps(payload.get("steps"), "steps", spec)
    seed = parse_seed(payload.get("seed"), "seed")
    batch_noise = None
    if payload.get("noise") is not None:
        batch_noise = parse_noise(payload["noise"], "noise", spec, batch=len(raw))
    out = []
    for i, obs in enumerate(raw):
        name = f"observations[{i}]"
        if not isinstance(obs, dict):
            raise RequestError(name, f"expected an observation object, got {_json_type(obs)}")
        item = _parse_native_observation(obs, name, spec, steps)
        if item.seed is None and seed is not None:
            item.seed = (seed + i) % (MAX_SEED + 1)
        if item.noise is None and batch_noise is not None:
            item.noise = batch_noise[i]
        out.append(item)
    return out


def unknown_observation_keys(keys: Any) -> list[str]:
    """The keys of an observation that the /v1/act schema does not define."""
    return sorted(str(k) for k in keys if k not in OBSERVATION_KEYS and not str(k).startswith(IMAGE_PREFIX))


def _parse_native_observation(obs: dict[str, Any], name: str, spec: ModelSpec, steps: int) -> Observation:
    unknown = unknown_observation_keys(obs)
    if unknown:  # a dropped key would answer for something the client did not ask (e.g. another robot)
        raise RequestError(
            f"{name}.{unknown[0]:.64}",
            f"unknown key(s) {[k[:64] for k in unknown[:5]]}: an "
            f"observation takes '{IMAGE_PREFIX}<camera>' and {list(OBSERVATION_KEYS)}",
        )
    keys = _camera_keys(obs, name, spec)
    images = [decode_image(obs[k], f"{name}.{k}", spec, allow_chw=True) for k in keys]
    if "task" not in obs:
        raise RequestError(f"{name}.task", "missing: send the task instruction as a string")
    task = parse_text(obs["task"], f"{name}.task", spec)
    state = None
    if spec.use_proprio:
        if obs.get(STATE_KEY) is None:
            raise RequestError(
                f"{name}.{STATE_KEY}", f"missing: send the robot state (1 to {spec.proprio_dim} numbers)"
            )
        state = parse_state(obs[STATE_KEY], f"{name}.{STATE_KEY}", spec)
    domain = _observation_domain(obs, name, spec)
    seed = parse_seed(obs.get("seed"), f"{name}.seed")
    noise = parse_noise(obs["noise"], f"{name}.noise", spec) if obs.get("noise") is not None else None
    item = Observation(
        images=images, state=state, task=task, domain_id=domain, steps=steps, seed=seed, noise=noise
    )
    if obs.get("prefix") is not None:
        item.prefix, item.prefix_weights, item.guidance = parse_prefix(obs, name, spec, domain)
    elif any(obs.get(k) is not None for k in PREFIX_OPTIONS):
        raise RequestError(
            f"{name}.prefix",
            f"missing: {[k for k in PREFIX_OPTIONS if obs.get(k) is not None]} "
            "only apply to a committed 'prefix' of actions",
        )
    return item


# ------------------------------------------------------------------------------------------ real-time chunking
PREFIX_OPTIONS = ("delay", "prefix_weights", "guidance")
GUIDANCE_MODES = ("inpaint", "guided")


def parse_prefix(
    obs: dict[str, Any], name: str, spec: ModelSpec, domain: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """``prefix`` [d, action dim] + ``delay`` (or explicit ``prefix_weights`` [d]) + ``guidance``.

    Without explicit weights, real-time chunking's mask is used: weight 1 for the ``delay`` actions
    executed while the chunk is computed, then decaying to 0 over the rest of the prefix.
    """
    from ..execution.strategies import rtc_prefix_weights

    width = spec.action_dim_for(domain)
    array = decode_array(
        obs["prefix"], f"{name}.prefix", kinds="uif", max_elements=spec.chunk_size * width, max_ndim=2
    )
    if array.ndim != 2 or not 1 <= array.shape[0] <= spec.chunk_size or array.shape[1] != width:
        raise RequestError(
            f"{name}.prefix",
            f"expected [d, {width}] committed actions with 1 <= d <= "
            f"chunk_size={spec.chunk_size}, got shape {list(array.shape)}",
        )
    prefix = array.astype(np.float64)
    if not np.isfinite(prefix).all():
        raise RequestError(f"{name}.prefix", "contains NaN or infinite values; expected finite numbers")
    _check_magnitude(prefix, f"{name}.prefix", spec)
    length = prefix.shape[0]
    if obs.get("prefix_weights") is not None:
        weights = decode_array(
            obs["prefix_weights"], f"{name}.prefix_weights", kinds="uif", max_elements=length, max_ndim=1
        ).astype(np.float64)
        if (
            weights.shape != (length,)
            or not np.isfinite(weights).all()
            or weights.min() < 0
            or weights.max() > 1
        ):
            raise RequestError(
                f"{name}.prefix_weights", f"expected {length} numbers in [0, 1], one per prefix action"
            )
    elif obs.get("delay") is not None:
        delay = parse_int(
            obs["delay"], f"{name}.delay", f"an integer number of control steps in [0, {length}]"
        )
        if not 0 <= delay <= length:
            raise RequestError(
                f"{name}.delay", f"delay={delay} is out of range: expected [0, {length}] (the prefix length)"
            )
        weights = rtc_prefix_weights(delay, length)
    else:
        raise RequestError(
            f"{name}.delay",
            "missing: a prefix needs the inference delay in control steps (or explicit prefix_weights)",
        )
    guidance = obs.get("guidance", "inpaint")
    if guidance not in GUIDANCE_MODES:
        raise RequestError(
            f"{name}.guidance", f"{guidance!r:.40} is unknown: choose one of {list(GUIDANCE_MODES)}"
        )
    return prefix.astype(np.float32), weights.astype(np.float32), guidance


def _observation_domain(obs: dict[str, Any], name: str, spec: ModelSpec) -> int:
    """``robot`` names a domain; ``domain_id`` gives one; both must then agree."""
    if obs.get("robot") is None:
        return _domain_or_default(obs.get("domain_id"), f"{name}.domain_id", spec)
    domain = _robot_domain(obs["robot"], f"{name}.robot", spec)
    if obs.get("domain_id") is not None:
        given = parse_int(obs["domain_id"], f"{name}.domain_id", "an integer domain id")
        if given != domain:
            raise RequestError(
                f"{name}.domain_id",
                f"domain_id {given} disagrees with robot {obs['robot']!r} "
                f"(domain {domain}): send one of the two",
            )
    return domain


def _robot_domain(value: Any, field: str, spec: ModelSpec) -> int:
    robots = dict(spec.robots)
    if not isinstance(value, str) or value not in robots:
        raise RequestError(field, f"unknown robot {str(value)[:64]!r}: this server knows {sorted(robots)}")
    return robots[value]


def _domain_or_default(value: Any, field: str, spec: ModelSpec) -> int:
    """A request without a domain id gets the checkpoint's default domain."""
    if value is not None:
        return parse_domain_id(value, field, spec)
    if spec.default_domain_id not in spec.allowed_domains:
        raise RequestError(field, f"missing: this server needs one of {sorted(spec.allowed_domains)}")
    return spec.default_domain_id


def _camera_keys(obs: dict[str, Any], name: str, spec: ModelSpec) -> Sequence[str]:
    if spec.image_keys:
        missing = [k for k in spec.image_keys if obs.get(k) is None]
        if missing:
            raise RequestError(
                f"{name}.{missing[0]}",
                f"missing camera: this checkpoint expects the cameras {list(spec.image_keys)}",
            )
        keys = list(spec.image_keys)
        extra = sorted(k for k in obs if k.startswith(IMAGE_PREFIX) and k not in keys and obs[k] is not None)
        if extra:
            raise RequestError(
                f"{name}.{extra[0]}", f"unknown camera: this checkpoint takes {list(spec.image_keys)}"
            )
    else:
        keys = sorted(k for k in obs if k.startswith(IMAGE_PREFIX) and obs[k] is not None)
    if not keys:
        raise RequestError(
            f"{name}.observation.images",
            "no camera image: add at least one 'observation.images.<camera>' entry",
        )
    if len(keys) > spec.max_views:
        raise RequestError(
            f"{name}.{keys[spec.max_views]}",
            f"too many images: {len(keys)} cameras given, this model takes at most {spec.max_views} views",
        )
    return keys
