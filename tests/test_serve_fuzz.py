"""Fuzzing deepnet serve: thousands of malformed requests, generated from the server's own
OpenAPI schema (a hypothesis strategy per schema keyword, below) and by hand (hypothesis
strategies for bodies, content types, shapes, values, images and paths). Every one gets a 4xx with a message or a
200, never a 5xx, and a valid request succeeds after every one of them."""

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.datasets import load_digits

from deepnet.serve import ServeSettings, create_app

from _served_run import make_served_run

# Floats are drawn without subnormals: the trainer flushes denormals to zero for speed
# (torch.set_flush_denormal, process-wide), and hypothesis refuses to generate them then.
# Two subnormal literals are among the hand-picked values instead.
VALID = {"inputs": load_digits().images[0].tolist()}
FUZZ = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
SENT = {"requests": 0}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    run = make_served_run(tmp_path_factory.mktemp("fuzz"))
    with TestClient(create_app(ServeSettings(str(run), max_wait_ms=0, max_body_bytes=64 * 1024)),
                    raise_server_exceptions=False) as client:
        yield client
    print(f"fuzz: {SENT['requests']} requests")


def _send(client, method: str, path: str, body: bytes | None, content_type: str | None):
    headers = {"content-type": content_type} if content_type is not None else {}
    response = client.request(method, path, content=body, headers=headers)
    SENT["requests"] += 1
    assert response.status_code < 500, (response.status_code, response.text, body[:200] if body else body)
    if response.status_code >= 400 and method != "HEAD":  # HEAD answers have no body
        detail = response.json()["detail"]
        assert detail and (isinstance(detail, str) or isinstance(detail, list)), response.text
    ok = client.post("/predict", json=VALID)  # the server keeps serving valid requests
    assert ok.status_code == 200, ok.text
    return response


def _post_json(client, payload, content_type: str = "application/json"):
    body = json.dumps(payload, allow_nan=True).encode()
    return _send(client, "POST", "/predict", body, content_type)


# ------------------------------------------------------ generated from the OpenAPI schema

_ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                         max_leaves=40)
_NUMBERS = st.recursive(st.floats(-1, 20, allow_subnormal=False) | st.integers(-2, 20), lambda inner: st.lists(inner, min_size=1, max_size=9),
                        max_leaves=200)


def from_schema(schema: dict):
    """The JSON values a JSON Schema admits, for the keywords the server's request schema uses
    (type, properties, additionalProperties: false, min/maxProperties, items, contentEncoding).
    hypothesis-jsonschema would do this in general, but it breaks on current hypothesis."""
    kind = schema.get("type")
    if kind is None:
        return _ANY_JSON | _NUMBERS
    if kind == "object":
        properties = schema.get("properties", {})
        assert schema.get("additionalProperties") is False, "only closed objects are generated"
        keys = st.lists(st.sampled_from(sorted(properties)), unique=True,
                        min_size=schema.get("minProperties", 0), max_size=schema.get("maxProperties", len(properties)))
        return keys.flatmap(lambda chosen: st.fixed_dictionaries({k: from_schema(properties[k]) for k in chosen}))
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=8)
    if kind == "string":
        if schema.get("contentEncoding") == "base64":
            return st.binary(max_size=80).map(lambda raw: base64.b64encode(raw).decode()) | st.text(max_size=20)
        return st.text(max_size=40)
    return {"number": st.floats(allow_subnormal=False), "integer": st.integers(), "boolean": st.booleans(), "null": st.none()}[kind]


def not_from_schema(schema: dict):
    """JSON the object schema refuses: another type, unknown keys, or a field of the wrong type."""
    properties = sorted(schema["properties"])
    wrong_type = st.sampled_from(properties).flatmap(
        lambda key: _ANY_JSON.filter(lambda v, key=key: not isinstance(v, list if schema["properties"][key]["type"] == "array" else str))
        .map(lambda v, key=key: {key: v}))
    extra_key = st.tuples(from_schema(schema), st.text(min_size=1, max_size=8).filter(lambda k: k not in properties), _ANY_JSON) \
        .map(lambda t: {**t[0], t[1]: t[2]})
    return _ANY_JSON.filter(lambda v: not isinstance(v, dict)) | wrong_type | extra_key

def _request_schema(client) -> dict:
    return client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_bodies_generated_from_the_openapi_schema(client):
    # Every body the schema admits: arrays of arbitrary JSON, strings as images or texts...
    schema = _request_schema(client)

    @FUZZ
    @given(from_schema(schema))
    def fuzz(payload):
        _post_json(client, payload)

    fuzz()


def test_bodies_the_openapi_schema_refuses(client):
    # ... and JSON the schema does not admit (the negation of its object form), sent as bodies.
    schema = _request_schema(client)

    @FUZZ
    @given(not_from_schema(schema))
    def fuzz(payload):
        _post_json(client, payload)

    fuzz()


# ----------------------------------------------------------------------- by hand

@st.composite
def _arrays(draw):
    """Numeric arrays of every plausible and implausible shape and value."""
    shape = draw(st.sampled_from([(8, 8), (1, 8, 8), (2, 1, 8, 8), (0, 1, 8, 8), (8,), (64,), (1, 1, 1, 8, 8), (3, 8, 8)])
                 | st.lists(st.integers(0, 5), max_size=4).map(tuple))
    if int(np.prod(shape)) > 2000:
        shape = (8, 8)
    elements = draw(st.sampled_from([
        st.floats(0, 16, allow_subnormal=False), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.integers(-(2**70), 2**70),
        st.sampled_from([0, 16, 16.000001, -0.0, -1e-30, 1e308, -1e308, 5e-324, 1e-310]), st.booleans(), st.none(), st.text(max_size=3)]))
    flat = draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    array = np.empty(int(np.prod(shape)), dtype=object)
    array[:] = flat
    nested = array.reshape(shape).tolist() if shape else flat[0] if flat else []
    return nested


def test_hand_made_arrays(client):
    @FUZZ
    @given(_arrays(), st.sampled_from(["inputs", "texts", "images", "image"]))
    def fuzz(nested, key):
        _post_json(client, {key: nested})

    fuzz()


def _image_bytes(kind: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=kind)
    return buffer.getvalue()


@st.composite
def _images(draw):
    kind = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP"]))
    raw = _image_bytes(kind, (draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    cut = draw(st.integers(0, len(raw)))
    raw = draw(st.sampled_from([raw, raw[:cut], raw[:cut] + draw(st.binary(max_size=30)), draw(st.binary(max_size=60))]))
    text = base64.b64encode(raw).decode()
    return draw(st.sampled_from([text, text[:-1], text + "!", text.replace("A", "-"), ""]))


def test_hand_made_images(client):
    @FUZZ
    @given(st.lists(_images(), min_size=0, max_size=3), st.booleans())
    def fuzz(images, one):
        _post_json(client, {"image": images[0]} if one and images else {"images": images})

    fuzz()


def test_raw_bodies_and_content_types(client):
    content_types = st.sampled_from([None, "", "application/json", "application/json; charset=utf-16", "text/plain",
                                     "image/png", "image/jpeg", "multipart/form-data; boundary=x", "application/xml",
                                     "APPLICATION/JSON", ";;;", "image/gif"])
    bodies = st.binary(max_size=300) | st.text(max_size=200).map(str.encode) | st.sampled_from([
        b"{", b"}", b"null", b"[]", b"{}", b'{"inputs": NaN}', b'{"inputs": [[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]}',
        b"[" * 5000 + b"]" * 5000, b'{"inputs": 1e999}', b'{"inputs": [' + b"1," * 30000 + b"1]}",
        _image_bytes("PNG", (8, 8)), _image_bytes("JPEG", (8, 8))[:50], "{\"inputs\": [\"\u00e9\"]}".encode("utf-16")])

    @FUZZ
    @given(bodies, content_types)
    def fuzz(body, content_type):
        _send(client, "POST", "/predict", body, content_type)

    fuzz()


def test_paths_and_methods(client):
    @FUZZ
    @given(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
           st.sampled_from(["/predict", "/health", "/metadata", "/metrics", "/predict/", "//predict", "/%00", "/..",
                            "/predict?x=1"]) | st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"), max_size=30).map(lambda t: "/" + t),
           st.binary(max_size=40))
    def fuzz(method, path, body):
        _send(client, method, path, body if method not in ("GET", "HEAD") else None, "application/json")

    fuzz()


def test_the_fuzzing_was_thorough(client):
    text = client.get("/metrics").text
    refused = sum(float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith("deepnet_requests_total") and 'status="4' in line)
    errors = [line for line in text.splitlines() if line.startswith("deepnet_requests_total") and 'status="5' in line]
    print(f"fuzz: {SENT['requests']} fuzzed requests, {refused:.0f} answered 4xx, 5xx lines: {errors}")
    assert SENT["requests"] >= 3000 and refused >= 2000 and not errors
