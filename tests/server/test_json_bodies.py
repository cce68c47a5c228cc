"""JSON request bodies are read strictly: UTF-8 only, no key twice in an object.

`parse_json_body` is fuzzed with Hypothesis (it reads untrusted input): it returns
what `json.loads` returns or raises `InvalidRequestError`, never anything else; it
reads every JSON text Python writes; it refuses every UTF-16 and UTF-32 encoding and
every repeated key, however deep. Over HTTP, such bodies are 400 ``invalid_request``
and nothing is decided or logged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.errors import InvalidRequestError
from lictor.server.json_bodies import is_json, parse_json_body

Headers = dict[str, str]
FUZZ = settings(max_examples=300, deadline=None)
HTTP_FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # no lone surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
WIDE_ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
ASK = {
    "principal": {"type": "Agent", "id": "planner-7"},
    "action": {"type": "Action", "id": "deploy"},
    "resource": {"type": "Service", "id": "payments-api-staging"},
}


def refused(raw: bytes) -> bool:
    try:
        parse_json_body(raw)
    except InvalidRequestError:
        return True
    return False


@st.composite
def repeated_key_texts(draw: st.DrawFn) -> str:
    """A JSON text with one object that names a key twice, somewhere inside a value."""
    key = draw(texts)
    first, second = draw(json_values), draw(json_values)
    members = [
        (json.dumps(k), json.dumps(v))
        for k, v in draw(st.dictionaries(texts, json_values, max_size=4)).items()
    ]
    at = draw(st.integers(0, len(members)))
    members[at:at] = [(json.dumps(key), json.dumps(first)), (json.dumps(key), json.dumps(second))]
    inner = "{" + ",".join(f"{k}:{v}" for k, v in draw(st.permutations(members))) + "}"
    outer = json.dumps([*draw(st.lists(json_values, max_size=3)), "HERE"])
    return draw(st.sampled_from([inner, outer.replace('"HERE"', inner, 1)]))


@FUZZ
@given(value=json_values, ascii_only=st.booleans(), indent=st.sampled_from([None, 2]))
def test_reads_every_json_text_python_writes(value: Any, ascii_only: bool, indent: Any) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert parse_json_body(text.encode("utf-8")) == value


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()[:-1]))
def test_any_bytes_give_what_json_loads_gives_or_invalid_request(raw: bytes) -> None:
    try:
        value = parse_json_body(raw)
    except InvalidRequestError:
        return
    assert value == json.loads(raw)


@FUZZ
@given(value=json_values, encoding=st.sampled_from(WIDE_ENCODINGS), ascii_only=st.booleans())
def test_refuses_utf16_and_utf32(value: Any, encoding: str, ascii_only: bool) -> None:
    assert refused(json.dumps(value, ensure_ascii=ascii_only).encode(encoding))


@FUZZ
@given(value=json_values)
def test_refuses_a_byte_order_mark(value: Any) -> None:
    assert refused(b"\xef\xbb\xbf" + json.dumps(value).encode())


@FUZZ
@given(text=repeated_key_texts())
def test_refuses_a_key_named_twice_at_any_depth(text: str) -> None:
    json.loads(text)  # Python's json reads it: the last value wins
    assert refused(text.encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_refuses_constants_json_does_not_have(constant: str) -> None:
    assert refused(f'{{"x": [1, {constant}]}}'.encode())


@pytest.mark.parametrize("number", ["1e400", "-1e999", "2e308"])
def test_refuses_numbers_beyond_a_double(number: str) -> None:
    assert refused(f'{{"x": {number}}}'.encode())


def test_reads_long_integers_exactly() -> None:
    assert parse_json_body(b'{"x": 123456789012345678901234567890}') == {
        "x": 123456789012345678901234567890
    }


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83dy", "\\ude00\\ud83d"])
def test_refuses_unpaired_surrogate_escapes(escape: str) -> None:
    assert refused(f'{{"a": ["{escape}"]}}'.encode())
    assert refused(f'{{"{escape}": 1}}'.encode())


def test_reads_paired_surrogate_escapes_and_escaped_backslashes() -> None:
    assert parse_json_body(b'["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


def test_refuses_nesting_too_deep_and_numbers_too_long_as_invalid_request() -> None:
    assert refused(b"[" * 100_000 + b"]" * 100_000)
    assert refused(b"1" * 10_000)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/jsonx", False),
        ("", False),
    ],
)
def test_is_json(content_type: str, expected: bool) -> None:
    assert is_json(content_type) is expected


def _size(client: TestClient) -> int:
    size: int = client.get("/v1/log/checkpoint").json()["size"]
    return size


@pytest.fixture
def runtime(client: TestClient, admin: Headers) -> Headers:
    body = {"name": "edge-eu", "region": "eu-west-1", "cluster": "prod-a"}
    added = client.post("/v1/runtimes", json=body, headers=admin)
    assert added.status_code == 201, added.text
    headers = {"Authorization": f"Bearer {added.json()['credential']}"}
    beat = {"attestation": {"state": "verified"}}
    assert client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=headers).is_success
    return {**headers, "Content-Type": "application/json"}


def _assert_refused(client: TestClient, path: str, raw: bytes, headers: Headers) -> None:
    before = _size(client)
    r = client.post(path, content=raw, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert _size(client) == before  # nothing decided, nothing logged


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_decision_asked_in_utf16_or_utf32_is_refused(
    client: TestClient, runtime: Headers, encoding: str
) -> None:
    _assert_refused(client, "/v1/executions", json.dumps(ASK).encode(encoding), runtime)


def test_a_decision_naming_its_resource_twice_is_refused(
    client: TestClient, runtime: Headers
) -> None:
    text = json.dumps(ASK)[:-1] + ', "resource": {"type": "Service", "id": "payments-api"}}'
    assert json.loads(text)["resource"]["id"] == "payments-api"  # what the last one would say
    _assert_refused(client, "/v1/executions", text.encode(), runtime)


def test_the_same_decision_in_utf8_is_decided(client: TestClient, runtime: Headers) -> None:
    before = _size(client)
    r = client.post("/v1/executions", content=json.dumps(ASK).encode(), headers=runtime)
    assert r.status_code in (201, 403), r.text  # allowed or denied, but decided and logged
    assert _size(client) > before


@HTTP_FUZZ
@given(
    text=st.text(max_size=30),
    encoding=st.sampled_from(WIDE_ENCODINGS),
)
def test_log_entries_in_wide_encodings_are_refused(
    client: TestClient, admin: Headers, text: str, encoding: str
) -> None:
    entry = json.dumps({"kind": "note", "text": text}).encode(encoding)
    _assert_refused(client, "/v1/log/entries", entry, admin)


@HTTP_FUZZ
@given(text=st.text(max_size=30), other=json_values)
def test_log_entries_with_a_repeated_key_are_refused(
    client: TestClient, admin: Headers, text: str, other: Any
) -> None:
    entry = f'{{"kind": "note", "text": {json.dumps(text)}, "text": {json.dumps(other)}}}'
    _assert_refused(client, "/v1/log/entries", entry.encode(), admin)
