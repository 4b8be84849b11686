"""The access log: one line per request, written to stderr in batches.

Going through :mod:`logging` cost 12-17 microseconds a line (a ``LogRecord``, uvicorn's
formatter, a write and a flush), and under load every one of them is spent on the event
loop that also parses requests: switching the line off raised throughput ~12%
(benchmarks/bench_serve.py). Here a line is an f-string appended to a list, and the lines
are written together every ``interval`` seconds and when the server stops, as nginx's
``access_log ... buffer= flush=`` does. Errors and tracebacks still go through the
``deepnet.serve`` logger, at once.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

__all__ = ["AccessLog"]

# A write to a pipe of at most PIPE_BUF (4096 on Linux) bytes is atomic: with --workers N the
# processes share stderr, and a line must never be cut by another worker's.
_ATOMIC_BYTES = 4096


class AccessLog:
    """Buffered request lines. ``add`` is called on the event loop; ``flush`` writes them."""

    def __init__(self, interval: float = 0.05, stream: TextIO | None = None) -> None:
        self.interval = interval
        self._stream = stream  # None: sys.stderr as it is at the time of writing
        self._lines: list[str] = []
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # the loop whose timer will flush

    def add(self, client: tuple, method: str, path: str, status: int, seconds: float, examples: object) -> None:
        self._lines.append(f"INFO:     {client[0]}:{client[1]} {method} {path[:120]!a} {status} "
                           f"{1000 * seconds:.1f}ms examples={examples}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing would come back to write it later
            self.flush()
            return
        # A timer of a loop that has since stopped never fires (an app served by one event
        # loop after another, as test clients do): the next loop gets its own.
        if self._timer_loop is not loop:
            loop.call_later(self.interval, self.flush)
            self._timer_loop = loop

    def flush(self) -> None:
        self._timer_loop = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        stream = self._stream or sys.stderr
        chunk: list[str] = []
        size = 0
        for line in lines:
            if size + len(line) + 1 > _ATOMIC_BYTES and chunk:
                stream.write("\n".join(chunk) + "\n")
                stream.flush()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line) + 1
        stream.write("\n".join(chunk) + "\n")
        stream.flush()
