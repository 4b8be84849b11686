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
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from pydantic import BaseModel

from deepnet.serve.access_log import AccessLog
from deepnet.serve.batching import MicroBatcher
from deepnet.serve.runtime import load_runtime
from deepnet.serve.validation import IMAGE_TYPES, REQUEST_SCHEMA, Limits, RequestError, parse_predict_request

__all__ = ["ServeSettings", "create_app", "serve"]

logger = logging.getLogger("deepnet.serve")
SETTINGS_VARIABLE = "DEEPNET_SERVE_SETTINGS"  # how `--workers N` hands the settings to each worker
# prometheus_client's multiprocess mode: with `--workers N` every worker's counts go to files in
# this folder, and /metrics on any worker adds them all up. Read when prometheus_client is
# first imported, so serve() sets it before the workers start.
METRICS_FOLDER_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
GPU_MAX_WAIT_MS = 5.0  # the default --max-wait-ms when the model runs on a GPU
ENDPOINTS = ("/predict", "/health", "/metadata", "/metrics", "/openapi.json", "/docs")


@dataclass(frozen=True)
class ServeSettings:
    run: str
    runtime: str = "auto"  # auto (ONNX when RUN/model.onnx exists) | onnx | torch
    max_batch: int = 64  # examples per model call
    # How long the first request of a batch waits for company while the model is free. None:
    # 0 on the CPU, where a batch costs as much per example as single calls and waiting only
    # idles the model (docs/serving.md measures it); 5 on a GPU, where a batch costs about
    # as much as one example.
    max_wait_ms: float | None = None
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
        if self.max_wait_ms is not None and not self.max_wait_ms >= 0:
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
        self._folder = os.environ.get(METRICS_FOLDER_VARIABLE)

    def exposed(self) -> CollectorRegistry:
        """What /metrics shows: this process's metrics, or every worker's added up."""
        if self._folder is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._folder)
        return registry

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        # labels() looks up the environment on every call (~10 us): keep the children.
        key = (endpoint, str(status))
        if key not in self._children:
            self._children[key] = (self.requests.labels(*key), self.latency.labels(endpoint))
        requests, latency = self._children[key]
        requests.inc()
        latency.observe(seconds)


def _note(metrics: _Metrics, access_log: AccessLog, scope: dict, status: int, seconds: float, examples: Any = "-") -> None:
    """The Prometheus counts and the one access-log line of a request."""
    path = scope.get("path", "")
    endpoint = path if path in ENDPOINTS else "other"  # fuzzed paths must not grow the label set
    metrics.observe(endpoint, status, seconds)
    access_log.add(scope.get("client") or ("-", 0), scope.get("method", "-"), path, status, seconds, examples)


class _RequestLog:
    """ASGI middleware of the FastAPI app: the log line and counts of every request but
    ``POST /predict`` (which :class:`_Server` answers itself), whatever its fate."""

    def __init__(self, app: Any, metrics: _Metrics, access_log: AccessLog) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

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
            _note(self.metrics, self.access_log, scope, status, time.perf_counter() - start, scope.get("state", {}).get("examples", "-"))


class _ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


class _Server:
    """The ASGI app that uvicorn runs: ``POST /predict`` answered directly, everything else
    (health, metadata, metrics, the OpenAPI schema and docs, 404/405) by the FastAPI app.

    The direct path skips FastAPI's and Starlette's middleware stack, routing and request
    objects: of the ~280 microseconds the event loop spent on a prediction through them, ~150
    were theirs (py-spy, under the load of benchmarks/bench_serve.py). Its behaviour is the
    FastAPI route's: the same parsing, the same errors, the same log line and metrics.
    """

    def __init__(self, api: FastAPI, answer: Any, metrics: _Metrics, access_log: AccessLog, max_body_bytes: int) -> None:
        self.api, self.answer, self.metrics, self.access_log = api, answer, metrics, access_log
        self.max_body_bytes = max_body_bytes
        self.state = api.state

    def openapi(self) -> dict[str, Any]:
        return self.api.openapi()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.api(scope, receive, send)
            return
        start, status, examples = time.perf_counter(), 500, "-"
        try:
            headers = dict(scope["headers"])  # lower-case names; a repeated header: the last one
            content_type = headers.get(b"content-type")
            try:
                body = await _receive_body(receive, headers.get(b"content-length"), self.max_body_bytes)
                x = await self.answer.parse(None if content_type is None else content_type.decode("latin-1"), body)
                examples = len(x)
                status, content = 200, await self.answer.predict(x)
            except RequestError as err:
                status, content = err.status, orjson.dumps({"detail": err.message})
            except _ClientGone:
                status = 499  # nobody to answer; logged as nginx does
                return
            except Exception as err:  # a bug must not take the server down: 500 and the traceback in the log
                logger.exception("internal error on /predict")
                status, content = 500, _internal_error(err)
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(content)).encode())]})
            await send({"type": "http.response.body", "body": content})
        finally:
            _note(self.metrics, self.access_log, scope, status, time.perf_counter() - start, examples)


async def _receive_body(receive: Any, declared: bytes | None, limit: int) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"The body is {int(declared)} bytes; the limit is {limit} bytes (--max-body-bytes). "
                                "Send fewer examples per request.")
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise RequestError(413, f"The body exceeds the limit of {limit} bytes (--max-body-bytes). "
                                    "Send fewer examples per request.")
    return body


def _internal_error(err: Exception) -> bytes:
    return orjson.dumps({"detail": f"Internal error ({type(err).__name__}); the server log has the traceback."})


class _Answer:
    """Parsing and prediction of ``POST /predict``, shared by the direct path and the
    FastAPI route that documents it."""

    def __init__(self, settings: ServeSettings, runtime: Any, batcher: MicroBatcher, metrics: _Metrics) -> None:
        self.metadata, self.version, self.batcher, self.metrics = runtime.metadata, runtime.version, batcher, metrics
        self.limits = Limits(settings.max_body_bytes, settings.max_examples)
        self.names = runtime.metadata["class_names"]

    async def parse(self, content_type: str | None, body: bytes) -> Any:
        return parse_predict_request(content_type, body, self.metadata, self.limits)

    async def predict(self, x: Any) -> bytes:
        probabilities = await self.batcher.submit(x)
        self.metrics.examples.inc(len(x))
        indices = probabilities.argmax(axis=1).tolist()
        return orjson.dumps({"classes": [self.names[i] for i in indices], "indices": indices,
                             "probabilities": probabilities, "model_version": self.version},
                            option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(settings: ServeSettings) -> _Server:
    """The ASGI app for ``settings.run``; the model is loaded here, so errors come before serving."""
    runtime = load_runtime(settings.run, settings.runtime, threads=settings.threads, device=settings.device)
    metadata = runtime.metadata
    metrics, access_log = _Metrics(), AccessLog()
    max_wait_ms = settings.max_wait_ms
    if max_wait_ms is None:
        max_wait_ms = 0.0 if runtime.device == "cpu" else GPU_MAX_WAIT_MS
    batcher = MicroBatcher(runtime.predict, settings.max_batch, max_wait_ms / 1000,
                           on_batch=metrics.batch_size.observe, halve=runtime.device == "cpu")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the requests in flight have their responses
            await batcher.stop()
            access_log.flush()

    app = FastAPI(title="deepnet inference server", version=runtime.version, lifespan=lifespan,
                  description=f"Model {metadata.get('model')} of run {metadata.get('run')}: "
                              f"inputs {metadata['input_kind']} of shape {metadata['input_shape']}.")

    @app.exception_handler(RequestError)
    async def refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": err.message}, status_code=err.status)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error on %s", request.url.path)
        return Response(_internal_error(err), status_code=500, media_type="application/json")

    problems = {status: {"model": Problem, "description": text} for status, text in (
        (400, "Malformed JSON or an empty body"), (413, "Body or batch over the limit"),
        (415, "Wrong Content-Type"), (422, "Wrong shape, type, range, NaN/infinity, or an undecodable image"))}
    body_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": REQUEST_SCHEMA},
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES}}}}

    answer = _Answer(settings, runtime, batcher, metrics)

    async def predict(request: Request) -> Response:
        """Classify one example or a batch: ``{"inputs": [...]}``, ``{"images": [base64, ...]}``,
        ``{"texts": [...]}``, or a PNG/JPEG body."""
        declared = request.headers.get("content-length")
        body = await _receive_body(request.receive, declared and declared.encode(), settings.max_body_bytes)
        x = await answer.parse(request.headers.get("content-type"), body)
        request.state.examples = len(x)
        return Response(await answer.predict(x), media_type="application/json")

    # Documents the endpoint in the OpenAPI schema. `_Server` answers POST /predict itself with
    # the same parse and predict; this route answers only when the FastAPI app runs on its own.
    app.post("/predict", response_model=Prediction, responses=problems, openapi_extra=body_schema)(predict)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model_version": runtime.version}

    @app.get("/metadata")
    async def describe() -> dict[str, Any]:
        """Input shape, dtype and value range, class names, preprocessing, and the server's limits."""
        return {**metadata, "model_version": runtime.version, "runtime": runtime.name,
                "max_batch": settings.max_batch, "max_wait_ms": max_wait_ms,
                "max_body_bytes": settings.max_body_bytes, "max_examples": settings.max_examples}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.exposed()), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_RequestLog, metrics=metrics, access_log=access_log)
    app.state.metrics, app.state.batcher, app.state.runtime = metrics, batcher, runtime
    return _Server(app, answer, metrics, access_log, settings.max_body_bytes)


def app_from_environment() -> _Server:
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
    folder = None
    try:
        if workers == 1:
            uvicorn.run(app, **options)
        else:
            os.environ[SETTINGS_VARIABLE] = json.dumps(asdict(settings))
            if METRICS_FOLDER_VARIABLE not in os.environ:  # a folder of the user's own is kept
                folder = tempfile.mkdtemp(prefix="deepnet-serve-metrics-")
                os.environ[METRICS_FOLDER_VARIABLE] = folder
            uvicorn.run("deepnet.serve.app:app_from_environment", factory=True, workers=workers, **options)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if folder is not None:
            del os.environ[METRICS_FOLDER_VARIABLE]
            shutil.rmtree(folder, ignore_errors=True)
    print("stopped: every request in flight was answered", flush=True)
