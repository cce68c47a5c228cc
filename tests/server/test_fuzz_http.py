"""Hypothesis against the HTTP edge: bad input gets a 4xx with a stable code, never a 500."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.wire import ERROR_CLASSES

from ..strategies import json_values as any_json_value

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
json_values = any_json_value()
path_segment = st.text(alphabet="0123456789x.p/-entries", min_size=0, max_size=30)


def _is_clean_error(r: Any, allowed: set[int]) -> bool:
    if r.status_code not in allowed:
        return False
    if r.status_code >= 400:
        code = r.json()["error"]["code"]
        return code in ERROR_CLASSES or code in ("method_not_allowed", "http_error")
    return True


@FUZZ
@given(body=json_values | st.fixed_dictionaries({"kind": json_values, "text": json_values}))
def test_append_bodies(client: TestClient, admin: dict[str, str], body: Any) -> None:
    before = client.get("/v1/log/checkpoint").json()["size"]
    r = client.post("/v1/log/entries", json=body, headers=admin)
    assert _is_clean_error(r, {201, 400}), r.text
    after = client.get("/v1/log/checkpoint").json()["size"]
    assert after == before + (1 if r.status_code == 201 else 0)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_bodies(client: TestClient, admin: dict[str, str], raw: bytes) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    r = client.post("/v1/log/entries", content=raw, headers=headers)
    assert _is_clean_error(r, {201, 400}), r.text


@FUZZ
@given(path=path_segment)
def test_tile_paths(client: TestClient, path: str) -> None:
    r = client.get("/log/tile/" + path)
    assert _is_clean_error(r, {200, 400, 404}), (path, r.text)


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["index", "tree_size", "first", "second"]),
        st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.text(max_size=6),
        max_size=3,
    )
)
def test_proof_queries(client: TestClient, params: dict[str, str]) -> None:
    for endpoint in ("inclusion", "consistency"):
        r = client.get(f"/v1/log/proof/{endpoint}", params=params)
        assert _is_clean_error(r, {200, 400}), (params, r.text)


@FUZZ
@given(header=st.binary(max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b))
def test_authorization_headers(client: TestClient, header: bytes) -> None:
    r = client.post(
        "/v1/log/entries", json={"kind": "note", "text": "x"}, headers={"Authorization": header}
    )
    assert _is_clean_error(r, {401}), (header, r.text)
