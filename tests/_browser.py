"""Open a page in headless Chromium and report what happened, over the DevTools protocol.

No dependency: Chromium's own ``--remote-debugging-pipe`` speaks the protocol as
NUL-terminated JSON on file descriptors 3 (commands in) and 4 (replies and events out), so a
subprocess and two pipes are the whole client. (Playwright would bring its own Node.js driver
and wants to download its own browsers; a websocket client would add a package and a port.)
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    """A Chromium-family browser: $DEEPNET_CHROMIUM, else the first of BROWSERS on the PATH."""
    chosen = os.environ.get("DEEPNET_CHROMIUM")
    if chosen:
        return chosen if shutil.which(chosen) else None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class PageVisit:
    """What loading one page did: console errors and uncaught exceptions, every request the
    page made (URL), the value of ``probe`` evaluated in the page, and a PNG screenshot."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    probe: Any = None
    screenshot: bytes = b""
    print_probe: Any = None  # ``probe`` evaluated again under print media
    pdf: bytes = b""  # the page printed to PDF (A4)


class _Pipe:
    def __init__(self, browser: str, profile: str) -> None:
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        flags = ["--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--mute-audio", f"--user-data-dir={profile}",
                 "about:blank"]
        def onto_3_and_4() -> None:  # in the child, before exec: where Chromium expects the pipe
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        # close_fds=False keeps the new 3 and 4 open across exec; Python's own descriptors are
        # non-inheritable (PEP 446), so nothing else leaks into the browser.
        self.process = subprocess.Popen([browser, *flags], close_fds=False, preexec_fn=onto_3_and_4,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_child], [], [], left)[0]:
                raise TimeoutError("no answer from the browser")
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed the DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self.receive(max(deadline - time.monotonic(), 0.01))
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_child)
        os.close(self.from_child)


def visit(browser: str, page: Path, probe: str, *, width: int = 1366, height: int = 768) -> PageVisit:
    """Load ``page`` (a file) at a laptop's viewport, let it settle, evaluate ``probe`` (a JS
    expression returning JSON-able data), take a full-page screenshot, then evaluate ``probe``
    again under print media and print the page to PDF."""
    with tempfile.TemporaryDirectory() as profile:
        pipe = _Pipe(browser, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
            url = page.resolve().as_uri()
            pipe.send("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired")
            probe_value = pipe.send("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                                    session=session)["result"].get("value")
            shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                             session=session)["data"]
            pipe.send("Emulation.setEmulatedMedia", {"media": "print"}, session=session)
            print_value = pipe.send("Runtime.evaluate", {"expression": probe, "returnByValue": True},
                                    session=session)["result"].get("value")
            pdf = pipe.send("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69}, session=session)["data"]
            result = PageVisit(probe=probe_value, screenshot=base64.b64decode(shot), print_probe=print_value,
                               pdf=base64.b64decode(pdf))
            for event in pipe.events:
                method, params = event.get("method"), event.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    result.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
                elif method == "Runtime.exceptionThrown":
                    result.errors.append(params["exceptionDetails"].get("text", "exception"))
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    result.errors.append(params["entry"].get("text", ""))
                elif method == "Network.requestWillBeSent":
                    request_url = params["request"]["url"]
                    if request_url != url and not request_url.startswith("data:"):  # embedded, not fetched
                        result.requests.append(request_url)
            return result
        finally:
            pipe.close()
