"""A real `deepnet serve` process: SIGTERM while requests are in flight lets every one of
them complete, then the server exits 0; `--workers 2` serves too."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from _served_run import make_served_run

BODY = json.dumps({"inputs": load_digits().images[0].tolist()})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_served_run(tmp_path_factory.mktemp("process"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run_dir, *options: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "deepnet.cli", "serve", str(run_dir), "--port", str(port), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited early: {process.communicate()}")
        try:
            if _request(port, "GET", "/health")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not come up in 60 s")


def _request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_sigterm_finishes_the_requests_in_flight(run_dir):
    # A 3 s batching window holds the requests in the server when SIGTERM arrives (1 s after
    # they were sent: time enough to connect on a loaded machine).
    process, port = _start(run_dir, "--max-wait-ms", "3000")
    results: list[tuple[int, dict]] = []
    clients = [threading.Thread(target=lambda: results.append(_request(port, "POST", "/predict", BODY))) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(1.0)
    sent_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    for client in clients:
        client.join(timeout=30)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "stopped: every request in flight was answered" in out
    assert [status for status, _ in results] == [200] * 8, results
    assert all(len(body["probabilities"][0]) == 10 for _, body in results)
    assert time.monotonic() - sent_at >= 1.0  # they were answered after the signal, not before
    lines = [line for line in err.splitlines() if "POST '/predict' 200" in line]
    assert len(lines) == 8 and "examples=1" in lines[0]  # one log line per request
    with pytest.raises(OSError):  # and the server is gone
        _request(port, "GET", "/health")


def test_two_workers_serve_and_add_up_their_metrics(run_dir):
    process, port = _start(run_dir, "--workers", "2", "--max-wait-ms", "0")
    try:
        statuses = [_request(port, "POST", "/predict", BODY)[0] for _ in range(20)]  # new connections: both workers
        assert statuses == [200] * 20
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
        # Whichever worker answers /metrics counts the requests of both.
        assert 'deepnet_requests_total{endpoint="/predict",status="200"} 20.0' in text, text
        assert "deepnet_examples_total 20.0" in text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "with 2 worker(s)" in out


def test_bad_run_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "deepnet.cli", "serve", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: Run directory") and "Traceback" not in done.stderr
    assert np.char.count(done.stderr, "\n") == 1
