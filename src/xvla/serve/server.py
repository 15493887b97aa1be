"""Running the app: ``serve()`` for the command line, :class:`BackgroundServer` for tests and scripts.

Both use uvicorn. On SIGINT/SIGTERM uvicorn stops accepting connections, lets in-flight requests
finish (up to ``graceful_timeout_s``), then the app's shutdown drains the batcher.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .app import AppSettings, create_app
from .engine import ServeEngine
from .protocol import Limits

logger = logging.getLogger("xvla.serve")


@dataclass
class ServeConfig:
    """Everything ``xvla serve`` takes (one field per flag)."""

    policy_path: str = field(metadata={"help": "checkpoint folder (any format) or Hub id"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to bind (loopback only by default)"})
    port: int = field(default=8010, metadata={"help": "TCP port to listen on"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N or auto (cuda when available)"})
    dtype: str | None = field(
        default=None, metadata={"help": "float32 or bfloat16 (default: the checkpoint's)"}
    )
    fast: bool = field(
        default=False,
        metadata={
            "help": "the fastest correct setting for this machine (see `xvla info --hardware`); explicit --dtype, "
            "--quantize and --compile win"
        },
    )
    compile: bool | None = field(
        default=None,
        metadata={
            "help": "the fast path: compiled graphs, warmed at start for every batch size (default: off, or --fast's choice)"
        },
    )
    compile_batch_sizes: list[int] | None = field(
        default=None,
        metadata={
            "help": "batch sizes warmed at start (default 1,2,4,8); larger batches run in slices of the largest"
        },
    )
    quantize: str | None = field(
        default=None,
        metadata={
            "help": "int8: int8 linear layers (CPU only; with --compile, oneDNN's int8 kernels); none: full precision"
        },
    )
    api_key: str | None = field(
        default=None,
        metadata={
            "help": "require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: env XVLA_API_KEY)"
        },
    )
    max_batch_size: int = field(default=8, metadata={"help": "most samples in one forward pass"})
    batch_timeout_ms: float = field(
        default=5.0, metadata={"help": "how long a sample waits for others to join"}
    )
    max_body_mb: float = field(default=20.0, metadata={"help": "request size limit (413 above it)"})
    body_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "seconds a request body may take to arrive (408 after it; a slow sender holds no batch)"
        },
    )
    max_queue: int = field(default=256, metadata={"help": "waiting samples before answering 503"})
    steps: int | None = field(
        default=None, metadata={"help": "default denoising steps (default: the checkpoint's)"}
    )
    max_steps: int = field(default=100, metadata={"help": "largest 'steps' a request may ask for"})
    seed: int | None = field(default=None, metadata={"help": "seed of the noise of unseeded requests"})
    domain_ids: list[int] | None = field(
        default=None,
        metadata={"help": "serve these domain ids, e.g. 0,3 (default: the ones the checkpoint trained)"},
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (default: torch's choice)"}
    )
    encoded_channel_order: str = field(
        default="rgb",
        metadata={
            "help": "channel order of decoded JPEG/PNG images; 'bgr' reproduces the official (OpenCV) server"
        },
    )
    limits: Limits = field(default_factory=Limits)
    graceful_timeout_s: float = field(
        default=30.0, metadata={"help": "seconds in-flight requests get to finish on shutdown"}
    )
    adapters: list[str] | None = field(
        default=None,
        metadata={
            "help": "robot adapters to serve on this backbone, NAME=PATH,NAME=PATH (xvla adapter export)"
        },
    )
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    access_log: bool = field(default=False, metadata={"help": "log every request line"})

    def __post_init__(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError(
                f"--log-level {self.log_level!r} is invalid: choose debug, info, warning or error"
            )
        if self.dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"--dtype {self.dtype!r} is invalid: choose float32 or bfloat16")


def build_engine(cfg: ServeConfig) -> ServeEngine:
    import torch

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    limits = cfg.limits
    if limits.max_steps != cfg.max_steps:
        limits = Limits(**{**limits.__dict__, "max_steps": cfg.max_steps})
    engine = ServeEngine.from_pretrained(
        cfg.policy_path,
        device=cfg.device,
        dtype=cfg.dtype,
        compile=cfg.compile,
        compile_batch_sizes=tuple(cfg.compile_batch_sizes) if cfg.compile_batch_sizes else None,
        quantize=cfg.quantize,
        fast=cfg.fast,
        default_steps=cfg.steps,
        domain_ids=cfg.domain_ids,
        seed=cfg.seed,
        limits=limits,
        encoded_channel_order=cfg.encoded_channel_order,
    )
    from ..adapters import parse_adapter_specs

    for name, path in parse_adapter_specs(cfg.adapters):
        engine.load_adapter(path, name)
    return engine


def build_app(cfg: ServeConfig, engine: ServeEngine | None = None):
    engine = engine or build_engine(cfg)
    settings = AppSettings(
        api_key=cfg.api_key or None,
        max_body_bytes=int(cfg.max_body_mb * 1024 * 1024),
        body_timeout_s=cfg.body_timeout_s,
        max_batch_size=cfg.max_batch_size,
        batch_timeout_ms=cfg.batch_timeout_ms,
        max_queue=cfg.max_queue,
    )
    return create_app(engine, settings)


def _uvicorn_config(app, cfg: ServeConfig, **extra: Any):
    import uvicorn

    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=cfg.access_log,
        timeout_graceful_shutdown=cfg.graceful_timeout_s,
        limit_concurrency=max(64, 4 * cfg.max_queue),
        server_header=False,
        **extra,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: ServeConfig) -> None:
    """Load the checkpoint, warm it up and serve until interrupted (blocking)."""
    import uvicorn

    if not is_loopback(cfg.host) and not cfg.api_key:
        logger.warning(
            "binding to %s without an API key: anyone who can reach this address can drive the "
            "policy; set --api-key (or XVLA_API_KEY)",
            cfg.host,
        )
    engine = build_engine(cfg)
    seconds = engine.warmup()
    logger.info(
        "loaded %s: %s, chunk %d x %d, %d domains, up to %d views; warmed up in %.1fs",
        cfg.policy_path,
        engine.config.action_mode,
        engine.config.chunk_size,
        engine.model.real_action_dim,
        engine.config.num_domains,
        engine.spec.max_views,
        seconds,
    )
    logger.info(chunk_time_report(engine, cfg.max_batch_size))
    uvicorn.Server(_uvicorn_config(build_app(cfg, engine), cfg)).run()


def chunk_time_report(engine: ServeEngine, max_batch_size: int) -> str:
    """What a request will wait for, measured now at the served batch sizes (one line for the log)."""
    from ..model.int8_linear import Int8Linear

    model = engine.model
    times = engine.chunk_seconds(tuple(sorted({1, max_batch_size})))
    setting = f"{model.dtype}".replace("torch.", "")
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        setting += " + int8 linears"
    setting += ", compiled" if model.runner is not None else ", eager"
    per_batch = ", ".join(f"batch {b}: {t:.2f}s" for b, t in times.items())
    return f"chunk time ({setting}, {engine.spec.default_steps} denoising steps, on {engine.device}): {per_batch}"


class BackgroundServer:
    """A real uvicorn server on a free loopback port, in a daemon thread of this process.

    with BackgroundServer(ServeConfig(policy_path=...)) as server:
        requests.post(server.url + "/act", json=...)
    """

    def __init__(self, cfg: ServeConfig, engine: ServeEngine | None = None, warmup: bool = True):
        import uvicorn

        self.cfg = cfg
        self.engine = engine or build_engine(cfg)
        if warmup:
            self.engine.warmup()
        self.app = build_app(cfg, self.engine)
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when the listening
        # socket says TCP explicitly; without it every keep-alive answer waits ~40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((cfg.host, cfg.port))
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(_uvicorn_config(self.app, cfg))
        self._thread = threading.Thread(target=self._run, name="xvla-serve", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()
            self._error = exc

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
