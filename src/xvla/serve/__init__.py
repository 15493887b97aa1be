"""Serving X-VLA over HTTP: a batching policy server compatible with the official ``POST /act`` API,
and its clients.

    xvla serve --policy.path=DIR [--host 127.0.0.1] [--port 8010] [--device cpu|cuda] [--dtype ...]

    from xvla.serve import Client
    chunk = Client("http://127.0.0.1:8010").act(observation)

The web stack (FastAPI, uvicorn, httpx) comes with the ``serve`` extra and is imported only when a
server or client is built, so ``import xvla.serve`` and ``xvla --help`` work without it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsyncClient",
    "BackgroundServer",
    "Client",
    "RemotePolicy",
    "ServeConfig",
    "ServeEngine",
    "ServerError",
    "create_app",
    "serve",
]

_LAZY = {
    "AsyncClient": ".client",
    "Client": ".client",
    "RemotePolicy": ".client",
    "ServerError": ".client",
    "BackgroundServer": ".server",
    "ServeConfig": ".server",
    "serve": ".server",
    "ServeEngine": ".engine",
    "create_app": ".app",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
