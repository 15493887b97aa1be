"""Faults the server survives, on loopback: a client that hangs up while its sample waits in a batch, a body
that trickles in, an oversized body announced in its headers, SIGTERM with a request in flight."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

from .serve_support import frame, running_server

RNG = np.random.default_rng(0)
OBS = {
    "observation.images.front": frame(RNG, 32, 32).tolist(),
    "observation.state": [0.5, -0.5],
    "task": "stack",
}


def body(domain_id: int, seed: int = 7, steps: int | None = None) -> bytes:
    payload = {"observations": [{**OBS, "domain_id": domain_id}], "seed": seed}
    if steps is not None:
        payload["steps"] = steps
    return json.dumps(payload).encode()


def open_request(port: int, data: bytes, declared: int | None = None) -> socket.socket:
    """A raw HTTP request: the headers, then ``data`` (the whole body, part of it, or nothing)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /v1/act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data) if declared is None else declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def status_of(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the whole answer (headers, then Content-Length bytes of body)."""
    answer = b""
    while True:
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if _ and length is not None and len(rest) >= length:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


def test_a_client_that_hangs_up_in_a_batch_leaves_its_batch_mates_answered(serve_checkpoint, caplog):
    with running_server(serve_checkpoint, batch_timeout_ms=200.0) as srv:
        batcher = srv.app.state.batcher
        real, started, gate = batcher.run_batch, threading.Event(), threading.Event()

        def held(samples):  # the first batch (domain 5) holds the model until the others queue behind it
            if any(int(s.domain_id) == 5 for s in samples):
                started.set()
                gate.wait(60)
            return real(samples)

        batcher.run_batch = held
        answers = {}

        def post(name, data):
            answers[name] = httpx.post(srv.url + "/v1/act", content=data, timeout=60)

        blocker = threading.Thread(target=post, args=("blocker", body(5)))
        blocker.start()
        assert started.wait(60)
        with caplog.at_level(logging.WARNING):
            gone = open_request(srv.port, body(1, seed=1))
            wait_for(lambda: batcher.pending == 2, "the first sample to queue")
            gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            gone.close()  # a reset, while its sample waits for the next batch
            mate = threading.Thread(target=post, args=("mate", body(2)))
            mate.start()
            wait_for(lambda: batcher.pending == 3, "its batch-mate to queue")
            gate.set()
            for thread in (blocker, mate):
                thread.join(60)
        assert answers["blocker"].status_code == 200 and answers["mate"].status_code == 200
        assert answers["mate"].json()["timing"]["batch_sizes"] == [2]  # it ran beside the hung-up sample
        alone = httpx.post(srv.url + "/v1/act", content=body(2), timeout=60).json()["actions"]
        np.testing.assert_allclose(answers["mate"].json()["actions"], alone, atol=1e-5)
        assert batcher.stats.failures == 0 and httpx.get(srv.url + "/health").status_code == 200
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_slow_body_times_out_without_holding_a_batch(serve_checkpoint):
    with running_server(serve_checkpoint, body_timeout_s=1.0) as srv:
        whole = body(1)
        slow = open_request(srv.port, whole[:20], declared=len(whole))  # the rest never comes
        answer = httpx.post(srv.url + "/v1/act", content=body(2), timeout=60)
        assert answer.status_code == 200  # served while the slow body is still arriving
        status, text = status_of(slow)
        assert status == 408 and b"did not arrive within 1 s" in text
        assert srv.app.state.batcher.pending == 0 and srv.app.state.batcher.stats.samples == 1
        slow.close()


def test_an_oversized_body_is_refused_before_it_is_sent(serve_checkpoint):
    with running_server(serve_checkpoint, max_body_mb=1.0, body_timeout_s=30.0) as srv:
        sock = open_request(srv.port, b"", declared=50 * 1024 * 1024)  # headers only: the 50 MB never follow
        status, text = status_of(sock)
        assert status == 413 and b"at most 1048576 bytes" in text
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(serve_checkpoint, tmp_path):
    port, url = free_port(), None
    log = open(tmp_path / "server.log", "w+")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "xvla.cli", "serve", f"--policy.path={serve_checkpoint}", "--port", str(port),
         "--device", "cpu", "--threads", "1", "--max-steps", "100000", "--graceful-timeout-s", "120"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url, proc), "the server to start", timeout=120)
        single_step = httpx.post(url + "/v1/act", content=body(1, steps=1), timeout=60).json()["timing"]
        # enough denoising steps to be in flight for a while (about 2000 x one step), whatever the machine
        steps = int(min(100000, max(200, 2.0 / max(single_step["inference_ms"][0] / 1000, 1e-4))))
        answers = []
        inflight = threading.Thread(
            target=lambda: answers.append(
                httpx.post(url + "/v1/act", content=body(1, steps=steps), timeout=300)
            )
        )
        inflight.start()
        wait_for(lambda: _pending(url) >= 1, "the long request to queue")
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _refused(url), "new connections to be refused", timeout=60)
        inflight.join(300)
        assert answers and answers[0].status_code == 200, answers
        assert np.isfinite(answers[0].json()["actions"]).all()
        assert proc.wait(120) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _up(url: str, proc: subprocess.Popen) -> bool:
    assert proc.poll() is None, "the server exited during start-up"
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _pending(url: str) -> int:
    return httpx.get(url + "/health", timeout=5).json()["pending"]


def _refused(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=2)
    except httpx.TransportError:
        return True
    return False
