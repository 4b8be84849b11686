"""The HTTP inference server: a FastAPI app over one run, served by uvicorn.

``POST /predict`` (see :mod:`deepnet.serve.validation` for the bodies it takes) returns
``classes``, ``indices``, ``probabilities`` and ``model_version``; ``GET /health``,
``GET /metadata``, ``GET /metrics`` (Prometheus text) and ``GET /openapi.json`` describe
the server. Every refused request gets a 4xx whose ``detail`` says what was expected.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.routing import Route

from deepnet.serve.batching import MicroBatcher
from deepnet.serve.runtime import load_runtime
from deepnet.serve.validation import IMAGE_TYPES, REQUEST_SCHEMA, Limits, RequestError, parse_predict_request

__all__ = ["ServeSettings", "create_app", "serve"]

logger = logging.getLogger("deepnet.serve")
SETTINGS_VARIABLE = "DEEPNET_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker
ENDPOINTS = ("/predict", "/health", "/metadata", "/metrics", "/openapi.json", "/docs")


@dataclass(frozen=True)
class ServeSettings:
    run: str
    runtime: str = "auto"  # auto (ONNX when RUN/model.onnx exists) | onnx | torch
    max_batch: int = 64  # examples per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_body_bytes: int = 4 * 1024 * 1024  # larger bodies get 413
    max_examples: int = 1024  # examples per request; more get 413
    threads: int = 1  # intra-op threads of the runtime, per worker
    device: str = "cpu"  # torch runtime only

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_examples", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Received an invalid value for `{name}`: expected a positive integer. "
                                 f"Received: {name}={value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"Received an invalid value for `max_wait_ms`: expected 0 or more milliseconds. "
                             f"Received: max_wait_ms={self.max_wait_ms!r}")


class Prediction(BaseModel):
    classes: list[str]
    indices: list[int]
    probabilities: list[list[float]]
    model_version: str


class Problem(BaseModel):
    detail: str


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("deepnet_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("deepnet_request_seconds", "Time from request to response", ["endpoint"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
                                 registry=self.registry)
        self.batch_size = Histogram("deepnet_batch_size", "Examples per model call (micro-batches)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry)
        self.examples = Counter("deepnet_examples", "Examples predicted", registry=self.registry)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        # labels() looks up the environment on every call (~10 us): keep the children.
        key = (endpoint, str(status))
        if key not in self._children:
            self._children[key] = (self.requests.labels(*key), self.latency.labels(endpoint))
        requests, latency = self._children[key]
        requests.inc()
        latency.observe(seconds)


class _RequestLog:
    """ASGI middleware: one log line and the Prometheus counts per request, whatever its fate."""

    def __init__(self, app: Any, metrics: _Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - start
            path = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"  # fuzzed paths must not grow the label set
            self.metrics.observe(endpoint, status, seconds)
            client = scope.get("client") or ("-", 0)
            examples = scope.get("state", {}).get("examples", "-")
            logger.info("%s:%s %s %s %d %.1fms examples=%s", client[0], client[1], scope.get("method", "-"),
                        ascii(path[:120]), status, 1000 * seconds, examples)


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for ``settings.run``; the model is loaded here, so errors come before serving."""
    runtime = load_runtime(settings.run, settings.runtime, threads=settings.threads, device=settings.device)
    metadata = runtime.metadata
    limits = Limits(settings.max_body_bytes, settings.max_examples)
    metrics = _Metrics()
    batcher = MicroBatcher(runtime.predict, settings.max_batch, settings.max_wait_ms / 1000,
                           on_batch=metrics.batch_size.observe)
    names = metadata["class_names"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight have their responses
            await batcher.stop()

    app = FastAPI(title="deepnet inference server", version=runtime.version, lifespan=lifespan,
                  description=f"Model {metadata.get('model')} of run {metadata.get('run')}: "
                              f"inputs {metadata['input_kind']} of shape {metadata['input_shape']}.")

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return JSONResponse({"detail": f"Internal error ({type(err).__name__}); the server log has the traceback."},
                            status_code=500)

    problems = {status: {"model": Problem, "description": text} for status, text in (
        (400, "Malformed JSON or an empty body"), (413, "Body or batch over the limit"),
        (415, "Wrong Content-Type"), (422, "Wrong shape, type, range, NaN/infinity, or an undecodable image"))}
    body_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": REQUEST_SCHEMA},
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES}}}}

    async def predict(request: Request) -> Response:
        """Classify one example or a batch: ``{"inputs": [...]}``, ``{"images": [base64, ...]}``,
        ``{"texts": [...]}``, or a PNG/JPEG body."""
        body = await _read_body(request, settings.max_body_bytes)
        x = parse_predict_request(request.headers.get("content-type"), body, metadata, limits)
        request.state.examples = len(x)
        probabilities = await batcher.submit(x)
        metrics.examples.inc(len(x))
        indices = probabilities.argmax(axis=1).tolist()
        content = {"classes": [names[i] for i in indices], "indices": indices, "probabilities": probabilities,
                   "model_version": runtime.version}
        return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    # FastAPI documents the endpoint in the OpenAPI schema; the same function also runs as a
    # plain Starlette route placed first, which skips FastAPI's per-request dependency
    # solving: ~60 of the ~250 microseconds the server spends on a request (cProfile).
    app.post("/predict", response_model=Prediction, responses=problems, openapi_extra=body_schema)(predict)
    app.router.routes.insert(0, Route("/predict", predict, methods=["POST"]))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model_version": runtime.version}

    @app.get("/metadata")
    async def describe() -> dict[str, Any]:
        """Input shape, dtype and value range, class names, preprocessing, and the server's limits."""
        return {**metadata, "model_version": runtime.version, "runtime": runtime.name,
                "max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                "max_body_bytes": settings.max_body_bytes, "max_examples": settings.max_examples}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_RequestLog, metrics=metrics)
    app.state.metrics, app.state.batcher, app.state.runtime = metrics, batcher, runtime
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"The body is {int(declared)} bytes; the limit is {limit} bytes (--max-body-bytes). "
                                "Send fewer examples per request.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"The body exceeds the limit of {limit} bytes (--max-body-bytes). "
                                    "Send fewer examples per request.")
    return bytes(body)


def app_from_environment() -> FastAPI:
    """The app factory each `--workers N` process calls (settings from the environment)."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE])))


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish the requests in flight, exit."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be a positive integer; received {workers}.")
    app = create_app(settings)  # load once here too: a bad run fails before any worker starts
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["deepnet.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    options = dict(host=host, port=port, access_log=False, log_config=log_config, timeout_graceful_shutdown=30)
    metadata = app.state.runtime.metadata
    print(f"serving {settings.run} ({metadata.get('model')}, {app.state.runtime.name} runtime, version "
          f"{app.state.runtime.version}) on http://{host}:{port} with {workers} worker(s)", flush=True)
    # uvicorn stops on SIGINT/SIGTERM after the requests in flight are answered, then raises
    # the signal again for its previous handler: a stop asked for and done is exit status 0.
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in stops} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        if workers == 1:
            uvicorn.run(app, **options)
        else:
            os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
            uvicorn.run("deepnet.serve.app:app_from_environment", factory=True, workers=workers, **options)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("stopped: every request in flight was answered", flush=True)
