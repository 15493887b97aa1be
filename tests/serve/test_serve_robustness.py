"""Bad input never brings the server down: every malformed request gets a 4xx naming the field, internal
errors a 500 with a request id that is in the log, the API key is enforced, shutdown finishes in-flight work."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import json_numpy
import numpy as np
import pytest

from .serve_support import NUM_DOMAINS, STATE_DIM, frame, official_payload, post_json, running_server

RNG = np.random.default_rng(0)
GOOD = official_payload(RNG, n_images=2)
TINY_IMAGE = json_numpy.dumps(np.zeros((4, 4, 3), np.uint8))


def with_(**changes):
    body = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP = object()

# (name, body (dict -> JSON, or raw bytes), expected status, a word the field/message must contain)
MALFORMED = [
    ("not json", b"{'image0': 1", 400, "body"),
    ("empty body", b"", 400, "body"),
    ("binary body", bytes(range(256)), 400, "body"),
    ("top-level list", b"[1, 2, 3]", 422, "body"),
    ("top-level null", b"null", 422, "body"),
    ("NaN literal in body", b'{"domain_id": NaN}', 400, "body"),
    ("no images", with_(image0=_DROP, image1=_DROP), 422, "image0"),
    ("image not json", with_(image0="definitely not json"), 422, "image0"),
    ("image is a number", with_(image0=42), 422, "image0"),
    ("image float dtype", with_(image0=json_numpy.dumps(RNG.random((8, 8, 3)))), 422, "image0"),
    ("image int32 dtype", with_(image0=json_numpy.dumps(np.zeros((8, 8, 3), np.int32))), 422, "image0"),
    ("image grayscale", with_(image1=json_numpy.dumps(np.zeros((8, 8), np.uint8))), 422, "image1"),
    ("image rgba", with_(image1=json_numpy.dumps(np.zeros((8, 8, 4), np.uint8))), 422, "image1"),
    ("image 4-d", with_(image0=json_numpy.dumps(np.zeros((1, 8, 8, 3), np.uint8))), 422, "image0"),
    ("image zero size", with_(image0=json_numpy.dumps(np.zeros((0, 0, 3), np.uint8))), 422, "image0"),
    (
        "image corrupt bytes",
        with_(image0=json_numpy.dumps(np.frombuffer(b"\xff\xd8\xff garbage", np.uint8))),
        422,
        "image0",
    ),
    (
        "image object dtype",
        with_(image0=json.dumps({"__numpy__": "AAAA", "dtype": "|O", "shape": [3]})),
        422,
        "image0",
    ),
    (
        "image shape lies",
        with_(image0=json.dumps({"__numpy__": "AAAA", "dtype": "|u1", "shape": [64, 64, 3]})),
        422,
        "image0",
    ),
    (
        "image bad base64",
        with_(image0=json.dumps({"__numpy__": "@@@@", "dtype": "|u1", "shape": [3]})),
        422,
        "image0",
    ),
    (
        "image huge claimed shape",
        with_(image0=json.dumps({"__numpy__": "AAAA", "dtype": "|u1", "shape": [10**6, 10**6, 3]})),
        413,
        "image0",
    ),
    ("too many images", with_(image2=TINY_IMAGE, image3=TINY_IMAGE), 422, "image3"),
    ("proprio missing", with_(proprio=_DROP), 422, "proprio"),
    (
        "proprio too long",
        with_(proprio=json_numpy.dumps(np.zeros(STATE_DIM + 5, np.float32))),
        422,
        "proprio",
    ),
    ("proprio NaN", with_(proprio=json_numpy.dumps(np.array([1.0, np.nan], np.float32))), 422, "proprio"),
    ("proprio inf", with_(proprio=json_numpy.dumps(np.array([np.inf], np.float64))), 422, "proprio"),
    ("proprio strings", with_(proprio='["a", "b"]'), 422, "proprio"),
    ("proprio 2-d", with_(proprio=json_numpy.dumps(np.zeros((3, 3), np.float32))), 422, "proprio"),
    ("proprio object", with_(proprio={"a": 1}), 422, "proprio"),
    (
        "proprio absurd magnitude",
        with_(proprio=json_numpy.dumps(np.array([3e38, 1.0], np.float32))),
        422,
        "proprio",
    ),
    ("domain out of range", with_(domain_id=NUM_DOMAINS), 422, "domain_id"),
    ("domain negative", with_(domain_id=-3), 422, "domain_id"),
    ("domain huge", with_(domain_id=10**40), 422, "domain_id"),
    ("domain not a number", with_(domain_id="robot"), 422, "domain_id"),
    ("domain list", with_(domain_id=[1]), 422, "domain_id"),
    ("domain fractional", with_(domain_id=2.5), 422, "domain_id"),
    ("instruction missing", with_(language_instruction=_DROP), 422, "language_instruction"),
    ("instruction not text", with_(language_instruction=["pick"]), 422, "language_instruction"),
    ("steps zero", with_(steps=0), 422, "steps"),
    ("steps huge", with_(steps=10**9), 422, "steps"),
    ("steps text", with_(steps="ten"), 422, "steps"),
    ("steps unicode digit", with_(steps="\u00b2"), 422, "steps"),
    (
        "instruction lone surrogate",
        json.dumps(with_(language_instruction="\ud800")).encode(),
        422,
        "language_instruction",
    ),
    (
        "image dtype as structured string",
        with_(image0=json.dumps({"__numpy__": "", "dtype": "i4,i4", "shape": [0]})),
        422,
        "image0",
    ),
    (
        "image 0 x huge",
        with_(image0=json.dumps({"__numpy__": "", "dtype": "|u1", "shape": [0, 10**12, 3]})),
        422,
        "image0",
    ),
]


@pytest.mark.parametrize("name, body, status, field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_4xx_naming_the_field(http, name, body, status, field):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/act", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()
    assert field in detail["detail"] and detail["request_id"] == response.headers["x-request-id"]


def test_server_keeps_serving_after_the_corpus(http):
    for _, body, _, _ in MALFORMED:
        http.post("/act", content=body if isinstance(body, bytes) else json.dumps(body).encode())
    assert http.get("/health").json()["status"] == "ok"
    assert post_json(http, "/act", GOOD)[0] == 200


def test_native_endpoint_errors_name_the_observation(http):
    obs = {"observation.images.front": frame(RNG).tolist(), "observation.state": [0.0] * 3, "task": "x"}
    for body, field in [
        ({"observations": [obs, {**obs, "domain_id": 99}]}, "observations[1].domain_id"),
        ({"observations": [{**obs, "observation.state": [float("nan")]}]}, "body"),  # NaN is not JSON
        ({"observations": [{**obs, "observation.state": [0.0] * 99}]}, "observations[0].observation.state"),
        ({"observations": [obs], "seed": "abc"}, "seed"),
        ({"observations": [obs], "noise": [[0.0]]}, "noise"),
    ]:
        status, detail = post_json(http, "/v1/act", body) if field != "body" else (None, None)
        if field == "body":
            response = http.post("/v1/act", content=json.dumps(body).encode())
            status, detail = response.status_code, response.json()
        assert 400 <= status < 500 and field in detail["detail"], detail


def test_oversized_body_is_refused(http):
    big = json_numpy.dumps(np.zeros((700, 700, 3), np.uint8))  # ~2 MB of base64; the limit is 1 MB
    response = http.post("/act", content=json.dumps(with_(image0=big)).encode())
    assert response.status_code == 413 and "body" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b" " * 65536

    response = http.post("/act", content=chunks())
    assert response.status_code == 413
    assert http.get("/health").status_code == 200


def test_wrong_method_and_path(http):
    assert http.get("/act").status_code == 405
    assert http.post("/nope", json={}).status_code == 404


def test_api_key(serve_checkpoint):
    with running_server(serve_checkpoint, api_key="s3cret") as srv, httpx.Client(base_url=srv.url) as client:
        assert client.get("/health").status_code == 200  # liveness stays open
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"X-API-Key": "s3cre"},
            {"Authorization": "s3cret"},
        ):
            response = client.post("/act", json=GOOD, headers=headers)
            assert response.status_code == 401 and "API key" in response.json()["detail"]
        assert client.get("/info").status_code == 401
        assert client.post("/act", json=GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.post("/act", json=GOOD, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/info", headers={"X-API-Key": "s3cret"}).json()["auth"] is True


def test_internal_error_answers_500_with_a_logged_request_id(serve_checkpoint, caplog):
    with running_server(serve_checkpoint) as srv, httpx.Client(base_url=srv.url) as client:
        real_run = srv.engine.run

        def broken(samples):
            if any(int(s.domain_id) == 5 for s in samples):
                raise RuntimeError("simulated GPU failure")
            return real_run(samples)

        srv.engine.run = broken
        srv.app.state.batcher.run_batch = broken
        with caplog.at_level(logging.ERROR, logger="xvla.serve"):
            response = client.post("/act", json=with_(domain_id=5))
        assert response.status_code == 500
        rid = response.json()["request_id"]
        assert rid == response.headers["x-request-id"] and rid in response.json()["detail"]
        assert any(rid in record.getMessage() for record in caplog.records)
        assert client.post("/act", json=with_(domain_id=1)).status_code == 200  # still serving


def test_shutdown_finishes_in_flight_requests(serve_checkpoint):
    with running_server(serve_checkpoint) as srv:
        real_run = srv.app.state.batcher.run_batch

        def slow(samples):
            time.sleep(0.5)
            return real_run(samples)

        srv.app.state.batcher.run_batch = slow
        results = []

        def call():
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                results.append(client.post("/act", json=GOOD).status_code)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 10
        while srv.app.state.batcher.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.stop()  # while the request is inside the model
        thread.join(30)
        assert results == [200]
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url + "/health", timeout=2)


def test_non_finite_actions_fail_only_their_own_sample(serve_checkpoint):
    """A sample whose chunk comes out NaN gets a 422; the samples batched with it are unaffected."""
    with running_server(serve_checkpoint, batch_timeout_ms=300.0) as srv:
        model = srv.engine.model
        real = model.generate_actions

        def generate(**inputs):
            out = real(**inputs)
            out[inputs["domain_id"] == 5] = float("nan")
            return out

        model.generate_actions = generate
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                obs = {"observation.images.a": frame(RNG).tolist(), "observation.state": [0.5], "task": "x"}
                good = {"observations": [{**obs, "domain_id": 1}]}
                response = client.post(
                    "/v1/act", json={"observations": [{**obs, "domain_id": 1}, {**obs, "domain_id": 5}]}
                )
                assert response.status_code == 422 and "NaN" in response.json()["detail"]
                assert client.post("/v1/act", json=good).status_code == 200
                assert srv.app.state.batcher.stats.failures == 0
        finally:
            model.generate_actions = real


def test_routing_errors_have_the_documented_body(http):
    for method, path, status, field in (
        ("GET", "/nope", 404, "path"),
        ("GET", "/act", 405, "method"),
        ("DELETE", "/info", 405, "method"),
    ):
        answer = http.request(method, path)
        body = answer.json()
        assert answer.status_code == status and body["field"] == field, (method, path, body)
        assert body["detail"] and body["request_id"] == answer.headers["x-request-id"]
