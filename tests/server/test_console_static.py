"""Console static paths: a path the file system cannot look up is a 404, never a 500.

A name longer than the file-name limit (255 bytes on Linux), a path longer than the
path limit or a NUL byte makes the lookup itself fail; that is a file that is not
there. Hypothesis walks paths made of such parts.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.server.console import STATIC

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
parts = st.one_of(
    st.text(alphabet="abjs.-_", max_size=10),
    st.integers(200, 5000).map(lambda n: "a" * n),
    st.integers(200, 600).map(lambda n: "a" * n + ".js"),
    st.sampled_from([".", "..", "vendor", "%00", "%2F", "%2e%2e", "app.js", "vendor.json"]),
)
paths = st.lists(parts, min_size=1, max_size=6).map("/".join)


@pytest.mark.parametrize(
    "path",
    [
        "a" * 256,
        "a" * 300 + ".js",
        "a" * 5000 + ".css",
        "vendor/" + "a" * 256 + ".js",
        "/".join(["a" * 250] * 20) + "/x.js",  # a path over the path limit
        "a%00.js",
    ],
)
def test_a_path_the_file_system_cannot_look_up_is_not_found(client: TestClient, path: str) -> None:
    r = client.get("/console/static/" + path)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


def test_a_console_file_is_still_served(client: TestClient) -> None:
    script = sorted(STATIC.glob("*.js"))[0]
    r = client.get(f"/console/static/{script.name}")
    assert r.status_code == 200
    assert r.content == script.read_bytes()


@FUZZ
@given(path=paths)
def test_static_paths_are_found_or_not_found(client: TestClient, path: str) -> None:
    r = client.get("/console/static/" + path)
    assert r.status_code in (200, 404), (path[:80], r.text[:200])
    if r.status_code == 404:
        assert r.json()["error"]["code"] == "not_found"
