"""How executions are stored: the JSON forms keep `dataclasses.asdict`'s keys and order."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core.policy import RuntimeFacts
from lictor.core.types import Lease
from lictor.service.records import _document, _lease_json, _loaded, runtime_json


def test_runtime_and_lease_json_are_asdict_in_field_order() -> None:
    facts = RuntimeFacts("rt-1", "eu", "c1", "verified", ("sha256:a", "sha256:b"))
    expected = asdict(facts) | {"digests": ["sha256:a", "sha256:b"]}
    assert list(runtime_json(facts).items()) == list(expected.items())
    lease = Lease(ttl_ms=30_000, issued_at_ms=1, expires_at_ms=30_001, renew_by_ms=10_001)
    assert list(_lease_json(lease).items()) == list(asdict(lease).items())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what a record can hold
    | st.integers(min_value=2**53, max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_a_record_reads_back_as_written(value: dict[str, Any]) -> None:
    doc = _document({"context": value})
    assert _loaded(doc) == json.loads(doc) == {"context": value}


def test_a_record_orjson_refuses_reads_back_through_json() -> None:
    doc = b'{"context": {"s": "\\ud800"}, "n": 123456789012345678901}'
    assert _loaded(doc) == json.loads(doc)
    assert _loaded(b'{"s": "\\ud800"}') == {"s": "\ud800"}
