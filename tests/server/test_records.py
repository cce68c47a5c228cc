"""How executions are stored: the JSON forms keep `dataclasses.asdict`'s keys and order."""

from __future__ import annotations

from dataclasses import asdict

from lictor.core.policy import RuntimeFacts
from lictor.core.types import Lease
from lictor.service.records import _lease_json, runtime_json


def test_runtime_and_lease_json_are_asdict_in_field_order() -> None:
    facts = RuntimeFacts("rt-1", "eu", "c1", "verified", ("sha256:a", "sha256:b"))
    expected = asdict(facts) | {"digests": ["sha256:a", "sha256:b"]}
    assert list(runtime_json(facts).items()) == list(expected.items())
    lease = Lease(ttl_ms=30_000, issued_at_ms=1, expires_at_ms=30_001, renew_by_ms=10_001)
    assert list(_lease_json(lease).items()) == list(asdict(lease).items())
