"""``deepnet serve``: a run's model behind an HTTP API (FastAPI on uvicorn), with input
validation, dynamic micro-batching, Prometheus metrics and graceful shutdown."""

from deepnet.serve.app import ServeSettings, create_app, serve
from deepnet.serve.batching import MicroBatcher
from deepnet.serve.runtime import Runtime, load_runtime
from deepnet.serve.validation import RequestError

__all__ = ["MicroBatcher", "RequestError", "Runtime", "ServeSettings", "create_app", "load_runtime", "serve"]
