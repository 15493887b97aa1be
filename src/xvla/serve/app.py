"""The HTTP application (FastAPI): routes, authentication, body limits, error answers.

Routes
    POST /act      the official X-VLA API (``image0..2``, ``proprio``, ``language_instruction``,
                   ``domain_id``, ``steps``) -> ``{"action": [[...], ...]}``
    POST /v1/act   native: a batch of LeRobot-style observations, optional seed / noise
                   -> ``{"actions": [[[...]]], "timing": {...}, "request_id": ...}``
    GET  /health   liveness and batching counters (never needs the API key)
    GET  /info     what the server runs: checkpoint, action space, chunk, domains, views, device ...

Every answer carries an ``X-Request-ID`` header. A client mistake is a 4xx whose JSON body says
which field is wrong and what was expected; an internal failure is a 500 whose body holds the
request id that the log line also holds.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .batcher import BatchResult, DynamicBatcher, QueueFullError, ShuttingDownError
from .engine import Sample, ServeEngine
from .protocol import RequestError, parse_json_body, parse_native, parse_official

logger = logging.getLogger("xvla.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class AppSettings:
    api_key: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    max_batch_size: int = 8
    batch_timeout_ms: float = 5.0
    max_queue: int = 256
    prepare_threads: int = 8  # concurrent request decoders (JSON, base64, image decode and resize)


class RequestIdMiddleware:
    """Give every HTTP request an id (the client's ``X-Request-ID`` if it is sane) and echo it back."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.match(text) else None
        rid = rid or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex[:16]


def error_response(status: int, detail: str, rid: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    body: dict[str, Any] = {"detail": detail, "request_id": rid}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(engine: ServeEngine, settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    batcher = DynamicBatcher(
        engine.run,
        max_batch_size=settings.max_batch_size,
        timeout_s=settings.batch_timeout_ms / 1000.0,
        max_queue=settings.max_queue,
    )
    limiter = anyio.CapacityLimiter(max(1, settings.prepare_threads))
    started = time.time()
    key = settings.api_key.encode() if settings.api_key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        logger.info("serving %s on %s (%s), batches of up to %d gathered for %.1f ms",
                    engine.checkpoint, engine.device, engine.config.dtype, settings.max_batch_size,
                    settings.batch_timeout_ms)  # fmt: skip
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish by now; drain whatever they queued.
            batcher.stop()
            logger.info("batcher stopped after %d samples in %d batches", batcher.stats.samples, batcher.stats.batches)

    app = FastAPI(
        title="xvla policy server", version=engine.describe()["version"], lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )  # fmt: skip
    app.add_middleware(RequestIdMiddleware)
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.settings = settings

    def check_key(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), key):
            raise RequestError(
                "authorization",
                "missing or wrong API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                status=401,
            )

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError("content-length", f"invalid Content-Length header {declared[:20]!r}", status=400)
            if int(declared) > limit:
                raise RequestError("body", f"the body is {int(declared)} bytes, at most {limit} bytes are allowed", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError("body", f"the body is over {limit} bytes, at most {limit} bytes are allowed", 413)
        return bytes(body)

    def decode(body: bytes, parse: Callable[[dict], Any]) -> list[Sample]:
        parsed = parse(parse_json_body(body))
        observations = parsed if isinstance(parsed, list) else [parsed]
        return [engine.prepare(obs) for obs in observations]

    async def infer(body: bytes, parse: Callable[[dict], Any]) -> tuple[list[BatchResult], float]:
        """Decode in a worker thread, queue the samples, await their results; returns (results, decode s)."""
        start = time.perf_counter()
        futures: list[asyncio.Future] = []
        batcher.arriving(+1)
        try:
            samples = await anyio.to_thread.run_sync(decode, body, parse, limiter=limiter)
            for sample in samples:
                futures.append(asyncio.wrap_future(batcher.submit(sample, sample.batch_key)))
        except BaseException:
            for fut in futures:  # e.g. the queue filled up half-way: do not run the other half for nobody
                fut.cancel()
            raise
        finally:
            batcher.arriving(-1)
        decoded = time.perf_counter() - start
        try:
            results = list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        for result in results:
            if isinstance(result.value, RequestError):
                error = result.value
                raise RequestError(error.field, error.message, error.status)
        return results, decoded

    async def handle(request: Request, work: Callable[[str], Awaitable[JSONResponse]]) -> JSONResponse:
        rid = request_id(request)
        start = time.perf_counter()
        try:
            response = await work(rid)
        except RequestError as exc:
            logger.info("%s %s %s -> %d %s", rid, request.method, request.url.path, exc.status, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return error_response(exc.status, str(exc), rid, exc.field, headers)
        except QueueFullError as exc:
            logger.warning("%s %s -> 503 busy (%s)", rid, request.url.path, exc)
            return error_response(503, f"the server is busy ({exc}); retry shortly", rid, headers={"Retry-After": "1"})
        except ShuttingDownError as exc:
            return error_response(503, str(exc), rid)
        except ClientDisconnect:
            logger.info("%s %s: the client disconnected before sending its whole body", rid, request.url.path)
            return error_response(400, "the client disconnected before sending its whole body", rid, "body")
        except Exception as exc:  # noqa: BLE001 - every other failure is ours: 500 + request id in the log
            logger.exception("%s %s %s -> 500 internal error: %s", rid, request.method, request.url.path, exc)
            return error_response(500, f"internal server error (request id {rid}; see the server log)", rid)
        logger.debug("%s %s -> %d in %.1f ms", rid, request.url.path, response.status_code,
                     1000 * (time.perf_counter() - start))  # fmt: skip
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {
            "status": "ok" if batcher.running else "stopping",
            "pending": batcher.pending,
            "uptime_s": round(time.time() - started, 3),
            "stats": batcher.stats.as_dict(),
        }
        return JSONResponse(body, status_code=200 if batcher.running else 503)

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            check_key(request)
            body = engine.describe()
            body.update(
                batching={"max_batch_size": settings.max_batch_size, "batch_timeout_ms": settings.batch_timeout_ms,
                          "max_queue": settings.max_queue},
                limits={"max_body_bytes": settings.max_body_bytes, "max_image_side": engine.limits.max_image_side,
                        "max_image_pixels": engine.limits.max_image_pixels,
                        "max_observations": engine.limits.max_observations,
                        "max_instruction_chars": engine.limits.max_instruction_chars},
                auth=key is not None,
                endpoints=["POST /act", "POST /v1/act", "GET /health", "GET /info"],
            )  # fmt: skip
            return JSONResponse(body)

        return await handle(request, work)

    @app.post("/act")
    async def act(request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            check_key(request)
            results, _ = await infer(await read_body(request), lambda p: parse_official(p, engine.spec))
            return JSONResponse({"action": results[0].value.tolist()})

        return await handle(request, work)

    @app.post("/v1/act")
    async def act_v1(request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            start = time.perf_counter()
            check_key(request)
            results, decode_s = await infer(await read_body(request), lambda p: parse_native(p, engine.spec))
            body = {
                "actions": [r.value.tolist() for r in results],
                "request_id": rid,
                "timing": {
                    "total_ms": round(1000 * (time.perf_counter() - start), 3),
                    "decode_ms": round(1000 * decode_s, 3),
                    "queue_ms": [round(1000 * r.queue_s, 3) for r in results],
                    "inference_ms": [round(1000 * r.run_s, 3) for r in results],
                    "batch_sizes": [r.batch_size for r in results],
                },
            }
            return JSONResponse(body)

        return await handle(request, work)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        logger.error("%s %s %s -> 500 unhandled %s: %s", rid, request.method, request.url.path,
                     type(exc).__name__, exc, exc_info=exc)  # fmt: skip
        return error_response(500, f"internal server error (request id {rid}; see the server log)", rid)

    return app
