"""deepnet serve in-process (Starlette's TestClient): predictions, metadata, metrics, the
micro-batcher, and a clear 4xx for every kind of bad request."""

import asyncio
import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from deepnet.evaluate import predict, prepare_inputs
from deepnet.serve import MicroBatcher, ServeSettings, create_app
from deepnet.serve.access_log import AccessLog
from deepnet.train.run import RunError, load_run

from _served_run import make_served_run

DIGITS = load_digits().images.astype(np.float32)  # (1797, 8, 8), pixels 0..16


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_served_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(run_dir):
    with TestClient(create_app(ServeSettings(str(run_dir), max_wait_ms=0))) as client:
        yield client


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _problem(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    for fragment in fragments:
        assert fragment in detail, detail


# ----------------------------------------------------------------------- happy paths


def test_one_example_and_a_batch_match_the_run(client, run_dir):
    run = load_run(run_dir)
    expected = [row["class"] for row in predict(run, prepare_inputs(DIGITS[:5, None], run.model_spec))]
    one = client.post("/predict", json={"inputs": DIGITS[0].tolist()})  # (8, 8): the channel axis may go
    assert one.status_code == 200
    assert one.json()["classes"] == expected[:1] and len(one.json()["probabilities"][0]) == 10
    batch = client.post("/predict", json={"inputs": DIGITS[:5, None].tolist()}).json()  # (5, 1, 8, 8)
    assert batch["classes"] == expected
    assert np.allclose(np.sum(batch["probabilities"], axis=1), 1, atol=1e-5)
    assert batch["model_version"].startswith("run@") and batch["indices"] == [int(c) for c in expected]


def test_images_base64_and_raw_png(client):
    pixels = DIGITS[:3] * 255 / 16  # PNGs hold 0..255; the server rescales to the data's 0..16
    by_inputs = client.post("/predict", json={"inputs": (np.round(pixels) * 16 / 255).tolist()}).json()
    images = [base64.b64encode(_png(np.round(p))).decode() for p in pixels]
    by_images = client.post("/predict", json={"images": images}).json()
    assert by_images["classes"] == by_inputs["classes"]
    np.testing.assert_allclose(by_images["probabilities"], by_inputs["probabilities"], atol=1e-5)
    raw = client.post("/predict", content=_png(np.round(pixels[0])), headers={"content-type": "image/png"}).json()
    assert raw["classes"] == by_inputs["classes"][:1]
    assert client.post("/predict", json={"image": images[1]}).json()["classes"] == by_inputs["classes"][1:2]


def test_torch_runtime_agrees_with_onnx(client, run_dir):
    with TestClient(create_app(ServeSettings(str(run_dir), runtime="torch", max_wait_ms=0))) as torch_client:
        body = {"inputs": DIGITS[:16].tolist()}
        by_torch = torch_client.post("/predict", json=body).json()
        assert torch_client.get("/metadata").json()["runtime"] == "torch"
    by_onnx = client.post("/predict", json=body).json()
    np.testing.assert_allclose(by_torch["probabilities"], by_onnx["probabilities"], atol=1e-5)
    assert client.get("/metadata").json()["runtime"] == "onnx"


def test_health_metadata_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    metadata = client.get("/metadata").json()
    assert metadata["input_shape"] == [1, 8, 8] and metadata["value_range"] == [0.0, 16.0]
    assert metadata["class_names"] == [str(d) for d in range(10)] and metadata["max_batch"] == 64
    schema = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert set(schema["requestBody"]["content"]) == {"application/json", "image/png", "image/jpeg"}
    assert {"200", "400", "413", "415", "422"} <= set(schema["responses"])


def test_max_wait_defaults_to_zero_on_the_cpu(run_dir):
    # On the CPU a batch costs as much per example as single calls: waiting for company only
    # idles the model (docs/serving.md, "Micro-batching"). A chosen wait is kept.
    with TestClient(create_app(ServeSettings(str(run_dir)))) as default:
        assert default.get("/metadata").json()["max_wait_ms"] == 0
    with TestClient(create_app(ServeSettings(str(run_dir), max_wait_ms=2.5))) as chosen:
        assert chosen.get("/metadata").json()["max_wait_ms"] == 2.5


def test_metrics_count_requests_latency_and_batches(client):
    client.post("/predict", json={"inputs": DIGITS[:3].tolist()})
    client.post("/predict", json={"inputs": "nope"})
    text = client.get("/metrics").text
    assert 'deepnet_requests_total{endpoint="/predict",status="200"}' in text
    assert 'deepnet_requests_total{endpoint="/predict",status="422"}' in text
    assert 'deepnet_request_seconds_bucket{endpoint="/predict",le="0.01"}' in text
    assert 'deepnet_batch_size_bucket{le="4.0"}' in text and "deepnet_examples_total" in text


def test_one_log_line_per_request(run_dir, capsys):
    # The access log is written in batches, and when the server stops: read it after the stop.
    # The module's shared client may flush its own lines into this capture (its 50 ms timer
    # still runs), so this client has an address of its own and only its lines are counted.
    with TestClient(create_app(ServeSettings(str(run_dir), max_wait_ms=0)), client=("log-test", 4711)) as client:
        client.post("/predict", json={"inputs": DIGITS[0].tolist()})
        client.get("/nope")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("INFO:     log-test:4711 ")]
    assert len(lines) == 2
    assert "POST '/predict' 200" in lines[0] and "examples=1" in lines[0] and "ms" in lines[0]
    assert "GET '/nope' 404" in lines[1]


def test_concurrent_requests_share_a_batch(run_dir):
    with TestClient(create_app(ServeSettings(str(run_dir), max_wait_ms=1000))) as slow:
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            slow.post("/predict", json={"inputs": DIGITS[i].tolist()}).status_code)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 6
        text = slow.get("/metrics").text
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("deepnet_batch_size_")}
    assert counts["deepnet_batch_size_count"] < 6  # fewer model calls than requests


# ------------------------------------------------------------------- the batcher alone


def test_micro_batcher_groups_splits_and_fails_requests_not_itself():
    calls = []

    def model(x):
        calls.append(len(x))
        if (x < 0).any():
            raise RuntimeError("boom")
        return x * 2

    async def scenario():
        batcher = MicroBatcher(model, max_batch=4, max_wait_s=0.05)
        await batcher.start()
        outs = await asyncio.gather(*(batcher.submit(np.full((1, 2), i, np.float32)) for i in range(6)))
        assert [float(o[0, 0]) for o in outs] == [0, 2, 4, 6, 8, 10]
        big = await batcher.submit(np.ones((9, 2), np.float32))  # larger than max_batch: runs alone
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(-np.ones((1, 2), np.float32))
        after = await batcher.submit(np.ones((1, 2), np.float32))
        await batcher.stop()
        return big, after

    big, after = asyncio.run(scenario())
    assert calls == [4, 2, 9, 1, 1] and big.shape == (9, 2) and float(after[0, 0]) == 2


def test_a_halving_batcher_takes_half_of_the_waiting_requests():
    calls = []

    def model(x):
        calls.append(len(x))
        return x

    async def scenario():
        batcher = MicroBatcher(model, max_batch=64, max_wait_s=0, halve=True)
        await batcher.start()
        # 9 requests queue before the batcher runs: 5 (half, rounded up), then 2, 1, 1.
        await asyncio.gather(*(batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(9)))
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [5, 2, 1, 1]

    async def alone_then_company():  # a request alone waits max_wait for company, halving or not
        batcher = MicroBatcher(model, max_batch=64, max_wait_s=0.5, halve=True)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32)))
        await asyncio.sleep(0.05)
        await asyncio.gather(first, *(batcher.submit(np.zeros((1, 2), np.float32)) for _ in range(3)))
        await batcher.stop()

    calls.clear()
    asyncio.run(alone_then_company())
    assert calls == [4]


def test_the_model_thread_starts_a_batch_before_the_event_loop_goes_on():
    """The hand-off (MicroBatcher._call): a batch starts on the model thread before the event
    loop runs its next callback. Left to the GIL, the model thread would wait until the loop
    let go of it: here, a switch interval (5 ms) into the 30 ms of Python work queued behind
    the batcher."""
    started, stretch = [], []

    def model(x):
        started.append(time.perf_counter())
        return x

    def parse_requests():  # the event loop's other work: Python holding the GIL
        begin = time.perf_counter()
        while time.perf_counter() < begin + 0.03:
            pass
        stretch.append((begin, time.perf_counter()))

    async def scenario():
        batcher = MicroBatcher(model, max_batch=64, max_wait_s=0)
        await batcher.start()
        await batcher.submit(np.zeros((1, 2), np.float32))  # the model thread exists and waits for work
        started.clear()
        await asyncio.sleep(0.01)  # the batcher waits on its queue
        answer = asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32)))
        await asyncio.sleep(0)  # the request is queued, and the batcher's wake-up with it
        asyncio.get_running_loop().call_soon(parse_requests)  # runs right after the batcher's step
        await answer
        await batcher.stop()

    asyncio.run(scenario())
    (begin, end), = stretch
    assert len(started) == 1 and started[0] < begin, \
        f"the model started {1000 * (started[0] - begin):.1f} ms into the loop's 30 ms of work"


def test_micro_batcher_settings_are_checked():
    with pytest.raises(ValueError, match=r"max_batch must be a positive integer; received 0"):
        MicroBatcher(lambda x: x, max_batch=0, max_wait_s=0)
    with pytest.raises(ValueError, match=r"`max_wait_ms`: expected 0 or more milliseconds. Received: max_wait_ms=-1"):
        ServeSettings("run", max_wait_ms=-1)
    with pytest.raises(ValueError, match=r"`max_batch`: expected a positive integer. Received: max_batch=0"):
        ServeSettings("run", max_batch=0)


# ------------------------------------------------------------------------ refusals


def test_wrong_shape(client):
    _problem(client.post("/predict", json={"inputs": [[1, 2, 3]]}), 422,
             "inputs of shape (1, 3) do not fit the model", "(1, 8, 8) or a batch (N, 1, 8, 8)")


def test_wrong_type(client):
    row = DIGITS[0].tolist()
    row[2][3] = "seven"
    _problem(client.post("/predict", json={"inputs": row}), 422, "inputs[2][3] is a JSON string; every value must be a number")
    _problem(client.post("/predict", json={"inputs": [[True] * 8] * 8}), 422, "inputs[0][0] is a JSON boolean")
    _problem(client.post("/predict", json={"inputs": {"a": 1}}), 422, "inputs must be a (nested) JSON array of numbers")
    _problem(client.post("/predict", json={"inputs": [[10**30] * 8] * 8}), 422, "values must lie in [0, 16]")
    _problem(client.post("/predict", json={"inputs": [[10**30, "x"] * 4] * 8}), 422, "inputs[0][1] is a JSON string")
    _problem(client.post("/predict", json={"inputs": [[10**30, True] * 4] * 8}), 422, "inputs[0][1] is a JSON boolean")


def test_numbers_in_any_json_spelling_are_read_alike(client):
    """Exponents, signs, fractions and whitespace take the fast path for bodies of numbers only
    (validation._NUMBER_CHARACTERS) and give the same answer as the canonical spelling."""
    image = DIGITS[0]
    canonical = client.post("/predict", json={"inputs": image.tolist()}).json()
    rows = ",\n\t".join("[" + " , ".join(f"{v / 10:g}E1" if v % 2 else f"{v:.1f}" for v in row) + "]" for row in image)
    body = f' {{ "inputs" :\r\n [[{rows}]] }} '.encode()
    spelled = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert spelled.status_code == 200, spelled.text
    np.testing.assert_allclose(spelled.json()["probabilities"], canonical["probabilities"], atol=1e-6)


def test_ragged_array(client):
    _problem(client.post("/predict", json={"inputs": [[1, 2], [3]]}), 422, "rectangular array")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(client, literal):
    body = json.dumps({"inputs": DIGITS[0].tolist()}).replace("0.0", literal, 1)
    _problem(client.post("/predict", content=body, headers={"content-type": "application/json"}), 422,
             "every value must be a finite number")


def test_values_out_of_range(client):
    _problem(client.post("/predict", json={"inputs": (DIGITS[0] * 16).tolist()}), 422,
             "values must lie in [0, 16] (raw pixel values", "max 240")
    _problem(client.post("/predict", json={"inputs": (DIGITS[0] - 1).tolist()}), 422, "min -1")


def test_oversized_body_is_413(run_dir):
    with TestClient(create_app(ServeSettings(str(run_dir), max_body_bytes=1000, max_wait_ms=0))) as small:
        _problem(small.post("/predict", json={"inputs": DIGITS[:10].tolist()}), 413,
                 "the limit is 1000 bytes (--max-body-bytes)")
        chunks = iter([b'{"inputs": [', b"0, " * 400, b"0]}"])  # no Content-Length: counted while read
        _problem(small.post("/predict", content=chunks, headers={"content-type": "application/json"}), 413,
                 "exceeds the limit of 1000 bytes")
        assert small.post("/predict", json={"inputs": DIGITS[0].tolist()}).status_code == 200


def test_too_many_examples_is_413(run_dir):
    with TestClient(create_app(ServeSettings(str(run_dir), max_examples=4, max_wait_ms=0))) as small:
        _problem(small.post("/predict", json={"inputs": DIGITS[:5].tolist()}), 413,
                 "5 examples exceed the limit of 4 per request")


def test_malformed_json(client):
    _problem(client.post("/predict", content=b'{"inputs": [1, 2', headers={"content-type": "application/json"}),
             400, "The body is not valid JSON")
    _problem(client.post("/predict", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}),
             400, "not valid JSON")
    _problem(client.post("/predict", content=b"[" * 100_000, headers={"content-type": "application/json"}),
             400, "not valid JSON")
    _problem(client.post("/predict", content=b"", headers={"content-type": "application/json"}), 400, "The body is empty")


def test_wrong_json_structure(client):
    _problem(client.post("/predict", json=[1, 2]), 422, "Expected a JSON object", "received a JSON array")
    _problem(client.post("/predict", json={"input": [1]}), 422, "unknown field(s) ['input']")
    _problem(client.post("/predict", json={"inputs": [1], "images": []}), 422, "exactly one of the fields")
    _problem(client.post("/predict", json={"inputs": []}), 422, "do not fit the model")
    _problem(client.post("/predict", json={"inputs": np.zeros((0, 1, 8, 8)).tolist()}), 422, "do not fit the model")
    _problem(client.post("/predict", json={"texts": ["hello"]}), 422, "reads image inputs, not text")


def test_undecodable_image(client):
    _problem(client.post("/predict", json={"images": ["not base64!"]}), 422, "images[0] is not valid base64")
    garbage = base64.b64encode(b"GIF89a" + bytes(100)).decode()
    _problem(client.post("/predict", json={"images": [garbage]}), 422, "images[0] is not a readable PNG or JPEG image")
    truncated = base64.b64encode(_png(DIGITS[0])[:40]).decode()
    _problem(client.post("/predict", json={"image": truncated}), 422, "image is not a readable PNG or JPEG image")
    _problem(client.post("/predict", content=b"\x89PNG....", headers={"content-type": "image/png"}), 422,
             "the body is not a readable PNG or JPEG image")
    _problem(client.post("/predict", json={"images": "abc"}), 422, "images must be a non-empty list of base64 strings")


def test_wrong_content_type(client):
    body = json.dumps({"inputs": DIGITS[0].tolist()})
    _problem(client.post("/predict", content=body, headers={"content-type": "text/plain"}), 415,
             "Content-Type must be application/json", "received 'text/plain'")
    _problem(client.post("/predict", content=body.encode()), 415, "received none")
    # a charset parameter is fine
    assert client.post("/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_unknown_path_and_method(client):
    _problem(client.get("/predict"), 405, "Method Not Allowed")
    _problem(client.get("/nowhere"), 404, "Not Found")


def test_missing_run_and_missing_onnx_file(tmp_path, run_dir):
    with pytest.raises(RunError, match=r"Run directory .* not found"):
        create_app(ServeSettings(str(tmp_path / "nope")))
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.json", "model.safetensors", "config.yaml"):
        (bare / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(RunError, match=r"has no model.onnx for --runtime onnx. Export it first: deepnet export"):
        create_app(ServeSettings(str(bare), runtime="onnx"))
    assert create_app(ServeSettings(str(bare))).state.runtime.name == "torch"  # auto falls back


# ----------------------------------------------------------------- a text classifier


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny transformer sentiment classifier over a 6-word vocabulary, trained 1 epoch."""
    import torch

    from deepnet.data import Dataset, Split
    from deepnet.data.text import encode_text
    from deepnet.export import export_run
    from deepnet.models import create_model
    from deepnet.train import fit

    prep = {"kind": "vocab", "tokens": ["<pad>", "<unk>", "good", "bad", "film", "very"], "max_len": 6, "lowercase": True}
    texts = ["good film", "very good film", "bad film", "very bad"] * 6
    x, y = encode_text(texts, prep), torch.tensor([1, 1, 0, 0] * 6)
    data = Dataset("words", Split(x, y), Split(x[:4], y[:4]), Split(x[:4], y[:4]), input_shape=(6,), num_classes=2,
                   class_names=["negative", "positive"], preprocessing=prep, vocab_size=6, input_kind="tokens")
    model = create_model("transformer-classifier", vocab_size=6, num_classes=2, max_len=6, d_model=16, n_layer=1, n_head=2)
    out = tmp_path_factory.mktemp("text") / "run"
    fit(model, data, epochs=1, batch_size=8, quiet=True, out=out, threads=1, checkpoint_every=0)
    export_run(out)
    return out


def test_text_classifier_takes_texts_and_token_ids(text_run):
    with TestClient(create_app(ServeSettings(str(text_run), max_wait_ms=0))) as text:
        by_text = text.post("/predict", json={"texts": ["A very good film!", "bad"]})
        assert by_text.status_code == 200 and set(by_text.json()["classes"]) <= {"negative", "positive"}
        by_ids = text.post("/predict", json={"inputs": [[1, 5, 2, 4, 1, 0], [3, 0, 0, 0, 0, 0]]}).json()
        np.testing.assert_allclose(by_ids["probabilities"], by_text.json()["probabilities"], atol=1e-6)
        assert text.get("/metadata").json()["value_range"] == [0, 5]
        _problem(text.post("/predict", json={"inputs": [[9, 0, 0, 0, 0, 0]]}), 422, "token ids must lie in [0, 5]")
        _problem(text.post("/predict", json={"inputs": [[1.5, 0, 0, 0, 0, 0]]}), 422, "integer token ids")
        _problem(text.post("/predict", json={"texts": "good"}), 422, "texts must be a non-empty list of strings")
        _problem(text.post("/predict", json={"images": ["AAAA"]}), 422, "reads tokens inputs of shape (6,), not images")


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_access_log_writes_whole_lines_in_atomic_chunks():
    stream = _Writes()
    log = AccessLog(stream=stream)
    log.add(("127.0.0.1", 5000), "POST", "/predict", 200, 0.0012, 1)  # no event loop: written at once
    assert stream.getvalue() == "INFO:     127.0.0.1:5000 POST '/predict' 200 1.2ms examples=1\n"

    async def many_requests() -> int:
        for i in range(300):
            log.add(("127.0.0.1", 6000 + i), "POST", "/predict", 200, 0.0012, 1)
        written = len(stream.writes)
        await asyncio.sleep(3 * log.interval)
        return written

    assert asyncio.run(many_requests()) == 1  # on a loop the lines wait, then go out together
    later = stream.writes[1:]
    assert len(later) > 1 and all(len(w.encode()) <= 4096 and w.endswith("\n") for w in later)
    assert len(stream.getvalue().splitlines()) == 301


def test_access_log_outlives_an_event_loop_that_stopped():
    stream = io.StringIO()
    log = AccessLog(stream=stream)

    async def one_request(port: int, wait: float) -> None:
        log.add(("127.0.0.1", port), "GET", "/health", 200, 0.001, "-")
        await asyncio.sleep(wait)

    asyncio.run(one_request(1, 0))  # this loop ends before its timer fires
    assert stream.getvalue() == ""
    asyncio.run(one_request(2, 3 * log.interval))  # the next loop writes both lines
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["127.0.0.1:1", "127.0.0.1:2"]
