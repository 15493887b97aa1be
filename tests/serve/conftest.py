"""Fixtures for the serving tests: a tiny checkpoint saved with the session's locally built tokenizer,
and a real uvicorn server on a free loopback port per module (stopped afterwards)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")
pytest.importorskip("json_numpy")

from xvla import XVLAPolicy  # noqa: E402

from .serve_support import running_server, serve_config  # noqa: E402


@pytest.fixture(scope="session")
def serve_checkpoint(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("serve_ckpt")
    XVLAPolicy(serve_config(), tokenizer=tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(serve_checkpoint):
    with running_server(serve_checkpoint, max_body_mb=1.0) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture
def rng():
    return np.random.default_rng(0)
