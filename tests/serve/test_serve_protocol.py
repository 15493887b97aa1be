"""The wire protocol without a server: json_numpy compatibility, validation, limits, image decoding."""

from __future__ import annotations

import io
import json

import json_numpy
import numpy as np
import pytest
from PIL import Image

from xvla.serve.client import encode_array
from xvla.serve.protocol import (
    Limits,
    ModelSpec,
    RequestError,
    decode_array,
    decode_image,
    parse_json_body,
    parse_native,
    parse_official,
)

from .serve_support import CHUNK, NUM_DOMAINS, STATE_DIM, official_payload


def spec(**overrides) -> ModelSpec:
    base = dict(
        proprio_dim=STATE_DIM,
        use_proprio=True,
        num_domains=NUM_DOMAINS,
        allowed_domains=frozenset(range(NUM_DOMAINS)),
        default_domain_id=0,
        max_views=3,
        chunk_size=CHUNK,
        model_action_dim=20,
        default_steps=2,
        limits=Limits(max_image_side=512, max_image_pixels=512 * 512),
    )
    base.update(overrides)
    return ModelSpec(**base)


def encoded(image: np.ndarray, fmt: str) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
        np.linspace(-1, 1, 7, dtype=np.float32),
        np.linspace(-1, 1, 6, dtype=np.float64).reshape(2, 3),
        np.arange(5, dtype=np.int64),
        np.arange(6, dtype=np.float32).reshape(2, 3).T,  # not C-contiguous: json_numpy copies the bytes
        np.array([1.5, 2.5], dtype=">f4"),  # big-endian
    ],
)
def test_decode_matches_json_numpy(array):
    text = json_numpy.dumps(array)
    ours = decode_array(text, "x", kinds="uif", max_elements=10_000)
    np.testing.assert_array_equal(ours, json_numpy.loads(text))
    assert ours.flags.writeable and ours.dtype.isnative
    # our client's encoder writes what json_numpy reads
    np.testing.assert_array_equal(json_numpy.loads(json.dumps(encode_array(array))), array)


def test_decode_accepts_dict_form_and_plain_lists():
    array = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(decode_array(json.loads(json_numpy.dumps(array)), "x", "f", 100), array)
    np.testing.assert_array_equal(decode_array(json_numpy.dumps(array.tolist()), "x", "f", 100), array)
    np.testing.assert_array_equal(decode_array([1.0, 2.0], "x", "f", 100), [1.0, 2.0])


@pytest.mark.parametrize(
    "value, needle",
    [
        ({"__numpy__": "AAAA", "dtype": "|O", "shape": [3]}, "not allowed"),  # object dtype: never built
        ({"__numpy__": "AAAA", "dtype": [["a", "<f4"]], "shape": [1]}, "simple numpy type"),  # structured
        ({"__numpy__": "AAAA", "dtype": "<U1", "shape": [1]}, "not allowed"),
        ({"__numpy__": "AAAA", "dtype": "nonsense", "shape": [1]}, "not a numpy dtype"),
        ({"__numpy__": "AAAA", "dtype": "<c16", "shape": [1]}, "not allowed"),
        (
            {"__numpy__": "AAAA", "dtype": "<f4", "shape": [100000, 100000]},
            "elements",
        ),  # checked before decoding
        ({"__numpy__": "AAAA", "dtype": "<f4", "shape": [-1]}, "negative"),
        (
            {"__numpy__": "AAAA", "dtype": "<f4", "shape": [5]},
            "base64 characters",
        ),  # shape lies about the data
        ({"__numpy__": "!!!!", "dtype": "|u1", "shape": [3]}, "base64"),
        ({"__numpy__": 5, "dtype": "|u1", "shape": [3]}, "base64 string"),
        ({"__numpy__": "AAAA", "dtype": "|u1", "shape": "3"}, "list of integers"),
        ({"__numpy__": "AAAA", "dtype": "|u1"}, "missing"),
        ("not json", "invalid JSON"),
        ("[1, NaN]", "NaN"),
        ("[[1, 2], [3]]", "ragged"),
        (["a", "b"], "non-numeric"),
        ([True, False], "boolean"),
        (None, "null"),
        (3.5, "a number"),
        ("[" * 5000 + "]" * 5000, "nested"),
    ],
)
def test_decode_rejects_with_a_message(value, needle):
    with pytest.raises(RequestError) as info:
        decode_array(value, "proprio", kinds="uif", max_elements=1000)
    assert info.value.field == "proprio" and 400 <= info.value.status < 500
    assert needle.lower() in str(info.value).lower()


def test_parse_json_body_errors():
    for body, status in [(b"", 400), (b"{bad", 400), (b"\xff\xfe", 400), (b"[1, 2]", 422), (b'"x"', 422)]:
        with pytest.raises(RequestError) as info:
            parse_json_body(body)
        assert info.value.status == status and info.value.field == "body"
    assert parse_json_body(b'{"a": 1}') == {"a": 1}


def test_official_payload_parses(rng):
    payload = json.loads(json.dumps(official_payload(rng, n_images=3, state_dim=5, domain_id=4, steps=3)))
    obs = parse_official(payload, spec())
    assert len(obs.images) == 3 and obs.images[0].shape == (48, 64, 3) and obs.images[0].dtype == np.uint8
    assert (
        obs.state.shape == (5,)
        and obs.domain_id == 4
        and obs.steps == 3
        and obs.task == "pick up the red block"
    )
    assert parse_official({**payload, "steps": None}, spec()).steps == 2  # the server default
    # a missing key is skipped: image0 and image2 become views 0 and 1
    del payload["image1"]
    obs2 = parse_official(payload, spec())
    np.testing.assert_array_equal(obs2.images[1], obs.images[2])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_encoded_images_decode_with_pillow(fmt, rng):
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    out = decode_image(json_numpy.dumps(encoded(image, fmt)), "image0", spec())
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    if fmt == "PNG":
        np.testing.assert_array_equal(out, image)
        bgr = decode_image(json_numpy.dumps(encoded(image, fmt)), "image0", spec(encoded_channel_order="bgr"))
        np.testing.assert_array_equal(bgr, image[..., ::-1])


def test_image_validation(rng):
    s = spec()
    bad = {
        "float": rng.random((8, 8, 3), dtype=np.float32),
        "gray": np.zeros((8, 8), np.uint8),
        "rgba": np.zeros((8, 8, 4), np.uint8),
        "chw": np.zeros((3, 8, 8), np.uint8),  # /act takes HxWx3 only
        "empty": np.zeros((0, 8, 3), np.uint8),
        "huge": np.zeros((1, 600, 3), np.uint8),
        "int16": np.zeros((8, 8, 3), np.int16),
        "garbage_bytes": np.frombuffer(b"definitely not a png", np.uint8),
        "empty_bytes": np.zeros(0, np.uint8),
        "gif": encoded(np.zeros((4, 4, 3), np.uint8), "GIF"),
        "bomb": encoded(np.zeros((600, 600, 3), np.uint8), "PNG"),  # over max_image_side once decoded
    }
    for name, image in bad.items():
        with pytest.raises(RequestError) as info:
            decode_image(json_numpy.dumps(image), "image1", s)
        assert info.value.field == "image1", name
        assert 400 <= info.value.status < 500, name
    assert decode_image(json_numpy.dumps(np.zeros((3, 8, 9), np.uint8)), "x", s, allow_chw=True).shape == (
        8,
        9,
        3,
    )
    assert (
        decode_image(np.zeros((2, 2, 3), int).tolist(), "x", s).dtype == np.uint8
    )  # small-int lists are fine
    with pytest.raises(RequestError, match="uint8"):
        decode_image((np.ones((2, 2, 3)) * 300).astype(int).tolist(), "x", s)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"proprio": json_numpy.dumps(np.zeros(STATE_DIM + 1, np.float32))}, "proprio"),
        ({"proprio": json_numpy.dumps(np.array([0.0, np.nan], np.float32))}, "proprio"),
        ({"proprio": json_numpy.dumps(np.array([0.0, np.inf]))}, "proprio"),
        ({"proprio": json_numpy.dumps(np.zeros((2, 3), np.float32))}, "proprio"),
        ({"proprio": json_numpy.dumps(np.zeros(0, np.float32))}, "proprio"),
        ({"proprio": None}, "proprio"),
        ({"domain_id": NUM_DOMAINS}, "domain_id"),
        ({"domain_id": -1}, "domain_id"),
        ({"domain_id": 1.5}, "domain_id"),
        ({"domain_id": "three"}, "domain_id"),
        ({"domain_id": True}, "domain_id"),
        ({"domain_id": 10**30}, "domain_id"),
        ({"steps": 0}, "steps"),
        ({"steps": 10**6}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"language_instruction": 5}, "language_instruction"),
        ({"language_instruction": "x" * 5000}, "language_instruction"),
        ({"image3": json_numpy.dumps(np.zeros((4, 4, 3), np.uint8))}, "image3"),
        ({"seed": -1}, "seed"),
        ({"noise": json_numpy.dumps(np.zeros((CHUNK, 7), np.float32))}, "noise"),
    ],
)
def test_official_field_errors_name_the_field(change, field, rng):
    payload = {**official_payload(rng), **change}
    with pytest.raises(RequestError) as info:
        parse_official(payload, spec())
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_fields_and_view_limits(rng):
    payload = official_payload(rng, n_images=3)
    for key in ("language_instruction", "proprio"):
        with pytest.raises(RequestError, match=key):
            parse_official({k: v for k, v in payload.items() if k != key}, spec())
    with pytest.raises(RequestError, match="image0"):
        parse_official({k: v for k, v in payload.items() if not k.startswith("image")}, spec())
    with pytest.raises(RequestError, match="too many images") as info:
        parse_official(payload, spec(max_views=2))
    assert info.value.field == "image2"
    # without proprioception the state is optional and ignored
    obs = parse_official(
        {k: v for k, v in payload.items() if k != "proprio"}, spec(use_proprio=False, proprio_dim=0)
    )
    assert obs.state is None
    with pytest.raises(RequestError, match="not one this checkpoint was trained for"):
        parse_official(payload, spec(allowed_domains=frozenset({0})))
    # without a domain id the checkpoint's default domain is used (as in eval and the Python API)
    assert parse_official({k: v for k, v in payload.items() if k != "domain_id"}, spec()).domain_id == 0
    with pytest.raises(RequestError, match="missing: this server needs one of"):
        parse_official(
            {k: v for k, v in payload.items() if k != "domain_id"}, spec(allowed_domains=frozenset({2}))
        )


def test_native_parsing(rng):
    obs = {
        "observation.images.front": encode_array(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)),
        "observation.state": [0.1, 0.2],
        "task": "open the drawer",
    }
    items = parse_native(
        {"observations": [obs, {**obs, "domain_id": 2, "seed": 9}], "seed": 5, "steps": 1}, spec()
    )
    assert [o.seed for o in items] == [5, 9] and [o.domain_id for o in items] == [0, 2]
    assert items[0].images[0].shape == (16, 16, 3) and items[0].steps == 1
    noise = np.zeros((2, CHUNK, 20), np.float32)
    items = parse_native({"observations": [obs, obs], "noise": encode_array(noise)}, spec())
    assert items[1].noise.shape == (CHUNK, 20)
    for body, field in [
        ({}, "observations"),
        ({"observations": []}, "observations"),
        ({"observations": {}}, "observations"),
        ({"observations": [1]}, "observations[0]"),
        ({"observations": [{**obs, "task": None}]}, "observations[0].task"),
        (
            {"observations": [{k: v for k, v in obs.items() if k != "observation.state"}]},
            "observations[0].observation.state",
        ),
        ({"observations": [{"task": "x", "observation.state": [0.0]}]}, "observations[0].observation.images"),
        ({"observations": [obs] * 65}, "observations"),
        ({"observations": [obs], "noise": encode_array(np.zeros((2, CHUNK, 20), np.float32))}, "noise"),
    ]:
        with pytest.raises(RequestError) as info:
            parse_native(body, spec())
        assert info.value.field == field, body.keys()
    with pytest.raises(RequestError, match="missing camera"):
        parse_native({"observations": [obs]}, spec(image_keys=("observation.images.wrist",)))
