"""The log's HTTP API: reads, admin-only appends, receipts, tiles, bad input."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lictor.datadir import hash_secret
from lictor.log.checkpoint import parse_checkpoint
from lictor.log.commitment import check_commitment
from lictor.log.entry import canonical_entry
from lictor.log.merkle import leaf_hash, merkle_root, verify_consistency, verify_inclusion
from lictor.log.note import open_note, parse_verifier_key
from lictor.log.proof import parse_tlog_proof, verify_tlog_proof
from lictor.log.tiles import decode_bundle
from lictor.service.log import AuditLog
from lictor.store.base import Credential


def _note(client: TestClient, admin: dict[str, str], text: str) -> dict[str, Any]:
    r = client.post("/v1/log/entries", json={"kind": "note", "text": text}, headers=admin)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _size(client: TestClient) -> int:
    size: int = client.get("/v1/log/checkpoint").json()["size"]
    return size


def _data(client: TestClient, index: int) -> bytes:
    return base64.b64decode(client.get(f"/v1/log/entries/{index}").json()["data"])


def _error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_append_returns_a_receipt_that_verifies_offline(
    client: TestClient, admin: dict[str, str]
) -> None:
    _note(client, admin, "first")
    body = _note(client, admin, "break-glass approved by alice")
    receipt = body["receipt"]
    assert body["index"] == receipt["index"] == 1
    vkey = client.get("/v1/log/key").json()["vkey"]
    proof = parse_tlog_proof(receipt["tlog_proof"])
    checkpoint, _ = verify_tlog_proof(
        proof, canonical_entry(receipt["entry"]), [parse_verifier_key(vkey)]
    )
    assert checkpoint.size == receipt["tree_size"] >= 2
    assert receipt["event"]["text"] == "break-glass approved by alice"
    assert receipt["event"]["by"] == "admin"
    assert "text" not in receipt["entry"]  # the public entry only commits to the event
    assert check_commitment(receipt["entry"]["commitment"], receipt["event"], receipt["salt"])
    other = dict(receipt["event"], text="something else")
    assert not check_commitment(receipt["entry"]["commitment"], other, receipt["salt"])


def test_appending_needs_the_admin_credential(client: TestClient) -> None:
    body = {"kind": "note", "text": "x"}
    _error(client.post("/v1/log/entries", json=body), 401, "unauthenticated")
    bad = {"Authorization": "Bearer lictor_not-a-real-token"}
    _error(client.post("/v1/log/entries", json=body, headers=bad), 401, "unauthenticated")
    basic = {"Authorization": "Basic YWRtaW46YWRtaW4="}
    _error(client.post("/v1/log/entries", json=body, headers=basic), 401, "unauthenticated")
    assert _size(client) == 0


def test_other_roles_may_not_append(
    client: TestClient, log: AuditLog, admin: dict[str, str]
) -> None:
    log.store.add_credential(Credential("auditor-1", "auditor", hash_secret("lictor_aud")))
    headers = {"Authorization": "Bearer lictor_aud"}
    r = client.post("/v1/log/entries", json={"kind": "note", "text": "x"}, headers=headers)
    _error(r, 403, "permission_denied")
    assert _size(client) == 0


def test_entries_show_the_private_event_only_to_admins_and_auditors(
    client: TestClient, log: AuditLog, admin: dict[str, str]
) -> None:
    _note(client, admin, "secret detail")
    public = client.get("/v1/log/entries/0").json()
    assert "event" not in public and "salt" not in public
    assert base64.b64decode(public["data"]) == canonical_entry(public["entry"])
    private = client.get("/v1/log/entries/0", headers=admin).json()
    assert private["event"]["text"] == "secret detail"
    log.store.add_credential(Credential("aud", "auditor", hash_secret("lictor_aud")))
    log.store.add_credential(Credential("rt", "runtime", hash_secret("lictor_rt")))
    audited = client.get("/v1/log/entries/0", headers={"Authorization": "Bearer lictor_aud"})
    assert audited.json()["event"] == private["event"]
    runtime = client.get("/v1/log/entries/0", headers={"Authorization": "Bearer lictor_rt"})
    assert "event" not in runtime.json()
    assert check_commitment(public["entry"]["commitment"], private["event"], private["salt"])


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "note"},
        {"kind": "note", "text": ""},
        {"kind": "deploy", "text": "x"},
        {"kind": "note", "text": "x", "extra": 1},
        {"kind": "note", "text": 5},
        {"kind": "note", "text": "x" * 8193},
        ["kind", "note"],
    ],
)
def test_malformed_appends_are_refused_and_write_nothing(
    client: TestClient, admin: dict[str, str], body: Any
) -> None:
    _error(client.post("/v1/log/entries", json=body, headers=admin), 400, "invalid_request")
    assert _size(client) == 0


def test_invalid_json_and_oversized_bodies_are_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    r = client.post("/v1/log/entries", content=b"{not json", headers=headers)
    _error(r, 400, "invalid_request")
    huge = b'{"kind": "note", "text": "' + b"x" * 1_100_000 + b'"}'
    _error(client.post("/v1/log/entries", content=huge, headers=headers), 413, "payload_too_large")
    assert _size(client) == 0


def test_proofs_verify_and_out_of_range_requests_are_4xx(
    client: TestClient, admin: dict[str, str]
) -> None:
    for i in range(7):
        _note(client, admin, f"note {i}")
    head = client.get("/v1/log/checkpoint").json()
    root = base64.b64decode(head["root"])
    entry = _data(client, 3)
    proof = client.get("/v1/log/proof/inclusion", params={"index": 3, "tree_size": 7}).json()
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    verify_inclusion(3, 7, leaf_hash(entry), hashes, root)
    old = client.get("/v1/log/proof/inclusion", params={"index": 0, "tree_size": 2}).json()
    assert old["tree_size"] == 2
    consistency = client.get("/v1/log/proof/consistency", params={"first": 2}).json()
    assert consistency["second"] == 7
    two_entries = [_data(client, i) for i in (0, 1)]
    first_root = merkle_root([leaf_hash(e) for e in two_entries])
    consistency_hashes = [base64.b64decode(h) for h in consistency["hashes"]]
    verify_consistency(2, 7, first_root, root, consistency_hashes)

    _error(client.get("/v1/log/entries/7"), 404, "not_found")
    for bad in ("-1", "abc", "1_0", "+1", "1.0", "01", " 1", "9" * 20):
        _error(client.get(f"/v1/log/entries/{bad}"), 400, "invalid_request")
    params: list[dict[str, Any]] = [
        {"index": 7},
        {"index": 0, "tree_size": 8},
        {"index": -1},
        {"index": "x"},
        {"index": 2**70},
        {"index": "1_0"},
        {"index": "+1"},
        {"index": "01"},
        {},
    ]
    for p in params:
        r = client.get("/v1/log/proof/inclusion", params=p)
        assert r.status_code == 400, (p, r.text)
        assert r.json()["error"]["code"] in ("invalid_tree_range", "invalid_request")
    for p in [{"first": 8}, {"first": 0}, {"first": 3, "second": 2}, {"first": 1, "second": 9}]:
        r = client.get("/v1/log/proof/consistency", params=p)
        assert r.status_code == 400, (p, r.text)
    _error(client.get("/v1/nothing-here"), 404, "not_found")
    not_allowed = client.delete("/v1/log/checkpoint")
    _error(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["allow"] == "GET"


def test_tiles_and_checkpoint_follow_tlog_tiles(client: TestClient, admin: dict[str, str]) -> None:
    texts = [f"tile note {i}" for i in range(3)]
    for text in texts:
        _note(client, admin, text)
    r = client.get("/log/checkpoint")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "max-age" in r.headers["cache-control"]
    vkey = client.get("/v1/log/key").json()["vkey"]
    opened = open_note(r.content, [parse_verifier_key(vkey)])
    checkpoint = parse_checkpoint(opened.text)
    assert checkpoint.size == 3

    tile = client.get("/log/tile/0/000.p/3")
    assert tile.status_code == 200
    assert tile.headers["content-type"] == "application/octet-stream"
    assert "immutable" in tile.headers["cache-control"]
    entries = [_data(client, i) for i in range(3)]
    assert tile.content == b"".join(leaf_hash(e) for e in entries)

    bundle = client.get("/log/tile/entries/000.p/3", headers={"Accept-Encoding": "gzip"})
    assert bundle.headers.get("content-encoding") == "gzip"
    assert decode_bundle(bundle.content) == entries  # the client decompressed it
    raw = client.get("/log/tile/entries/000.p/2", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers
    refused = client.get("/log/tile/entries/000.p/2", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    head = client.head("/log/checkpoint")
    assert head.status_code == 200 and head.content == b""
    assert client.head("/log/tile/0/000.p/3").headers["content-length"] == str(3 * 32)
    assert decode_bundle(raw.content) == entries[:2]
    assert gzip.compress(raw.content)  # sanity: the identity body is the raw bundle

    _error(client.get("/log/tile/0/000.p/4"), 404, "not_found")
    _error(client.get("/log/tile/0/000"), 404, "not_found")
    _error(client.get("/log/tile/1/000.p/1"), 404, "not_found")
    for bad in ["0/0000", "64/000", "0/000.p/0", "0/000.p/256", "x/000", "0/x000", "entries/1/000"]:
        _error(client.get(f"/log/tile/{bad}"), 400, "invalid_tile")


def test_health_metrics_and_openapi(client: TestClient, admin: dict[str, str]) -> None:
    _note(client, admin, "metrics")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["database"] == "ok" and ready["log_size"] == 1
    metrics = client.get("/metrics").text
    assert "lictor_log_tree_size 1.0" in metrics
    assert "lictor_log_entries_appended_total 1.0" in metrics
    assert 'lictor_http_requests_total{status="2xx"}' in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/log/entries" in paths and "/v1/log/proof/inclusion" in paths
