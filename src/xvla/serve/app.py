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
from starlette.exceptions import HTTPException as StarletteHTTPException
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
    body_timeout_s: float = (
        10.0  # a body that trickles in longer is answered 408 (it has no sample queued yet)
    )
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


def error_response(
    status: int, detail: str, rid: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "request_id": rid}
    if field:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers)


class _Routes:
    """The route handlers and what they share (the engine, the batcher, the settings)."""

    def __init__(self, engine: ServeEngine, settings: AppSettings, batcher: DynamicBatcher):
        self.engine, self.settings, self.batcher = engine, settings, batcher
        self.limiter = anyio.CapacityLimiter(max(1, settings.prepare_threads))
        self.started = time.time()
        self.key = settings.api_key.encode() if settings.api_key else None

    def check_key(self, request: Request) -> None:
        if self.key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), self.key):
            raise RequestError(
                "authorization",
                "missing or wrong API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                status=401,
            )

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(
                    "content-length", f"invalid Content-Length header {declared[:20]!r}", status=400
                )
            if int(declared) > limit:
                raise RequestError(
                    "body", f"the body is {int(declared)} bytes, at most {limit} bytes are allowed", 413
                )
        body = bytearray()
        timeout = self.settings.body_timeout_s
        try:
            with anyio.fail_after(timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise RequestError(
                            "body", f"the body is over {limit} bytes, at most {limit} bytes are allowed", 413
                        )
        except TimeoutError:
            raise RequestError(
                "body",
                f"the body did not arrive within {timeout:g} s ({len(body)} bytes came): send "
                "it at once (the server's --body-timeout-s)",
                408,
            ) from None
        return bytes(body)

    def decode(self, body: bytes, parse: Callable[[dict], Any]) -> list[Sample]:
        parsed = parse(parse_json_body(body))
        observations = parsed if isinstance(parsed, list) else [parsed]
        return [self.engine.prepare(obs) for obs in observations]

    async def infer(self, body: bytes, parse: Callable[[dict], Any]) -> tuple[list[BatchResult], float]:
        """Decode in a worker thread, queue the samples, await their results; returns (results, decode s)."""
        start = time.perf_counter()
        futures: list[asyncio.Future] = []
        self.batcher.arriving(+1)
        try:
            samples = await anyio.to_thread.run_sync(self.decode, body, parse, limiter=self.limiter)
            for sample in samples:
                futures.append(asyncio.wrap_future(self.batcher.submit(sample, sample.batch_key)))
        except BaseException:
            for fut in futures:  # e.g. the queue filled up half-way: do not run the other half for nobody
                fut.cancel()
            raise
        finally:
            self.batcher.arriving(-1)
        decoded = time.perf_counter() - start
        try:
            results = list(await asyncio.gather(*futures))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        for result in results:
            if isinstance(result.value, RequestError):
                raise RequestError(result.value.field, result.value.message, result.value.status)
        return results, decoded

    async def handle(self, request: Request, work: Callable[[str], Awaitable[JSONResponse]]) -> JSONResponse:
        """Run ``work`` and turn every failure into the documented error body."""
        rid = request_id(request)
        try:
            return await work(rid)
        except RequestError as exc:
            logger.info("%s %s %s -> %d %s", rid, request.method, request.url.path, exc.status, exc)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return error_response(exc.status, str(exc), rid, exc.field, headers)
        except QueueFullError as exc:
            logger.warning("%s %s -> 503 busy (%s)", rid, request.url.path, exc)
            return error_response(
                503, f"the server is busy ({exc}); retry shortly", rid, headers={"Retry-After": "1"}
            )
        except ShuttingDownError as exc:
            return error_response(503, str(exc), rid)
        except ClientDisconnect:
            logger.info("%s %s: the client disconnected before sending its whole body", rid, request.url.path)
            return error_response(400, "the client disconnected before sending its whole body", rid, "body")
        except Exception as exc:  # noqa: BLE001 - every other failure is ours: 500 + request id in the log
            logger.exception("%s %s %s -> 500 internal error: %s", rid, request.method, request.url.path, exc)
            return error_response(500, f"internal server error (request id {rid}; see the server log)", rid)

    # ------------------------------------------------------------------ routes
    async def add_adapter(self, request: Request) -> JSONResponse:
        """POST /v1/adapters {"name", "path"}: serve another robot on this backbone (needs --api-key)."""

        async def work(rid: str) -> JSONResponse:
            if self.key is None:
                raise RequestError(
                    "authorization",
                    "adapters can be added at run time only on a server started with "
                    "--api-key (or XVLA_API_KEY); start one, or pass --adapters at start",
                    status=403,
                )
            self.check_key(request)
            body = parse_json_body(await self.read_body(request))
            path, name = body.get("path"), body.get("name")
            if not isinstance(path, str) or not (name is None or isinstance(name, str)):
                raise RequestError(
                    "path", "send {'path': '<adapter file on the server>', 'name': '<robot name>'}"
                )
            try:
                info = await anyio.to_thread.run_sync(self.engine.load_adapter, path, name)
            except (ValueError, OSError) as exc:
                raise RequestError("path", str(exc)) from None
            return JSONResponse({"name": info.name, "domain_id": info.domain_id, "request_id": rid})

        return await self.handle(request, work)

    async def health(self) -> JSONResponse:
        running = self.batcher.running
        body = {
            "status": "ok" if running else "stopping",
            "pending": self.batcher.pending,
            "uptime_s": round(time.time() - self.started, 3),
            "stats": self.batcher.stats.as_dict(),
        }
        return JSONResponse(body, status_code=200 if running else 503)

    async def info(self, request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            self.check_key(request)
            s, lim = self.settings, self.engine.limits
            body = self.engine.describe()
            body.update(
                batching={
                    "max_batch_size": s.max_batch_size,
                    "batch_timeout_ms": s.batch_timeout_ms,
                    "max_queue": s.max_queue,
                },
                limits={
                    "max_body_bytes": s.max_body_bytes,
                    "max_image_side": lim.max_image_side,
                    "max_image_pixels": lim.max_image_pixels,
                    "max_observations": lim.max_observations,
                    "max_instruction_chars": lim.max_instruction_chars,
                },
                auth=self.key is not None,
                endpoints=["POST /act", "POST /v1/act", "POST /v1/adapters", "GET /health", "GET /info"],
            )
            return JSONResponse(body)

        return await self.handle(request, work)

    async def act(self, request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            self.check_key(request)
            results, _ = await self.infer(
                await self.read_body(request), lambda p: parse_official(p, self.engine.spec)
            )
            return JSONResponse({"action": results[0].value.tolist()})

        return await self.handle(request, work)

    async def act_v1(self, request: Request) -> JSONResponse:
        async def work(rid: str) -> JSONResponse:
            start = time.perf_counter()
            self.check_key(request)
            results, decode_s = await self.infer(
                await self.read_body(request), lambda p: parse_native(p, self.engine.spec)
            )
            timing = {
                "total_ms": round(1000 * (time.perf_counter() - start), 3),
                "decode_ms": round(1000 * decode_s, 3),
                "queue_ms": [round(1000 * r.queue_s, 3) for r in results],
                "inference_ms": [round(1000 * r.run_s, 3) for r in results],
                "batch_sizes": [r.batch_size for r in results],
            }
            return JSONResponse(
                {"actions": [r.value.tolist() for r in results], "request_id": rid, "timing": timing}
            )

        return await self.handle(request, work)


def create_app(engine: ServeEngine, settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    batcher = DynamicBatcher(
        engine.run,
        max_batch_size=settings.max_batch_size,
        timeout_s=settings.batch_timeout_ms / 1000.0,
        max_queue=settings.max_queue,
    )
    routes = _Routes(engine, settings, batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        logger.info(
            "serving %s on %s (%s), batches of up to %d gathered for %.1f ms",
            engine.checkpoint,
            engine.device,
            engine.config.dtype,
            settings.max_batch_size,
            settings.batch_timeout_ms,
        )
        try:
            yield
        finally:
            # uvicorn has let in-flight requests finish by now; drain whatever they queued.
            batcher.stop()
            logger.info(
                "batcher stopped after %d samples in %d batches", batcher.stats.samples, batcher.stats.batches
            )

    app = FastAPI(
        title="xvla policy server",
        version=engine.describe()["version"],
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestIdMiddleware)
    app.state.engine, app.state.batcher, app.state.settings = engine, batcher, settings
    app.add_api_route("/health", routes.health, methods=["GET"])
    app.add_api_route("/info", routes.info, methods=["GET"])
    app.add_api_route("/act", routes.act, methods=["POST"])
    app.add_api_route("/v1/act", routes.act_v1, methods=["POST"])
    app.add_api_route("/v1/adapters", routes.add_adapter, methods=["POST"])
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)
    return app


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """404 / 405 and other routing errors get the same body as every other error."""
    rid = request_id(request)
    if exc.status_code == 404:
        detail = (
            f"no route {request.url.path}: the endpoints are POST /act, POST /v1/act, POST /v1/adapters, "
            "GET /health, GET /info"
        )
        return error_response(404, detail, rid, "path")
    if exc.status_code == 405:
        return error_response(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            rid,
            "method",
            headers=dict(exc.headers or {}),
        )
    return error_response(exc.status_code, str(exc.detail), rid, headers=dict(exc.headers or {}) or None)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    logger.error(
        "%s %s %s -> 500 unhandled %s: %s",
        rid,
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    return error_response(500, f"internal server error (request id {rid}; see the server log)", rid)
