"""Real Sigstore staging log entries (sigstore-python test assets): Rekor v2
Ed25519 checkpoints with three witness cosignatures, a Rekor v1 ECDSA
checkpoint, and their inclusion proofs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from lictor.errors import ProofError, SignatureError
from lictor.log import checkpoint, cosignature, merkle, note


@pytest.fixture(scope="module")
def bundles(vectors: Path) -> Path:
    return vectors / "sigstore-python-bundles"


@pytest.fixture(scope="module")
def extracted(bundles: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((bundles / "extracted.json").read_text())
    return data


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _log_verifier(entry: dict[str, Any]) -> note.Verifier:
    """The note verifier for an entry's log, checked against the TrustedRoot log ID."""
    name = entry["log_base_url"].removeprefix("https://")
    spki = _b64(entry["log_public_key_spki_b64"])
    log_id = _b64(entry["trusted_root_logId_keyId_b64"])
    key = serialization.load_der_public_key(spki)
    if entry["log_key_details"] == "PKIX_ED25519":
        assert isinstance(key, ed25519.Ed25519PublicKey)
        public = key.public_bytes_raw()
        # Rekor v2's TrustedRoot stores the untruncated name-bound key ID.
        assert hashlib.sha256(name.encode() + b"\n\x01" + public).digest() == log_id
        ed = note.Ed25519Verifier(name, public)
        assert ed.key_id.to_bytes(4, "big") == log_id[:4]
        return ed
    assert isinstance(key, ec.EllipticCurvePublicKey)
    # Rekor v1: the log ID is SHA-256(SPKI); the note key ID is its prefix.
    assert hashlib.sha256(spki).digest() == log_id
    return note.ECDSAVerifier(name, int.from_bytes(log_id[:4], "big"), spki)


def test_trusted_root_agrees_with_the_extraction(bundles: Path, extracted: dict[str, Any]) -> None:
    root = json.loads((bundles / "staging.trusted_root.json").read_text())
    logs = {t["baseUrl"]: t for t in root["tlogs"]}
    for entry in extracted["entries"]:
        tlog = logs[entry["log_base_url"]]
        assert tlog["logId"]["keyId"] == entry["trusted_root_logId_keyId_b64"]
        assert tlog["publicKey"]["rawBytes"] == entry["log_public_key_spki_b64"]
        bundle = json.loads((bundles / entry["bundle_file"]).read_text())
        (tlog_entry,) = bundle["verificationMaterial"]["tlogEntries"]
        proof = tlog_entry["inclusionProof"]
        assert proof["checkpoint"]["envelope"] == entry["checkpoint_note"]
        assert proof["hashes"] == entry["inclusion_proof_b64"]
        assert tlog_entry["canonicalizedBody"] == entry["leaf_b64"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_checkpoint_and_inclusion(extracted: dict[str, Any], which: int) -> None:
    entry = extracted["entries"][which]
    verifier = _log_verifier(entry)
    data = entry["checkpoint_note"].encode()
    cp, opened = checkpoint.open_checkpoint(data, [verifier])
    assert [s.name for s in opened.verified] == [verifier.name]
    assert cp.size == entry["tree_size"]
    assert cp.root == _b64(entry["root_hash_b64"])
    leaf = merkle.leaf_hash(_b64(entry["leaf_b64"]))
    proof = [_b64(h) for h in entry["inclusion_proof_b64"]]
    merkle.verify_inclusion(entry["leaf_index"], cp.size, leaf, proof, cp.root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(entry["leaf_index"] - 1, cp.size, leaf, proof, cp.root)
    with pytest.raises(SignatureError):
        checkpoint.open_checkpoint(data.replace(b"\n", b"\n\n", 1), [verifier])


def test_rekor_v1_proof_index_is_shard_local(extracted: dict[str, Any]) -> None:
    entry = extracted["entries"][2]
    assert entry["log_key_details"] == "PKIX_ECDSA_P256_SHA_256"
    cp, _ = checkpoint.open_checkpoint(entry["checkpoint_note"].encode(), [_log_verifier(entry)])
    # The legacy origin has spaces; it is not the key name.
    assert cp.origin == "rekor.sigstage.dev - 8050909264565447525"
    leaf = merkle.leaf_hash(_b64(entry["leaf_b64"]))
    proof = [_b64(h) for h in entry["inclusion_proof_b64"]]
    assert entry["top_level_logIndex"] != entry["leaf_index"]
    with pytest.raises(ProofError):
        merkle.verify_inclusion(entry["top_level_logIndex"], cp.size, leaf, proof, cp.root)


def test_witness_cosignatures(extracted: dict[str, Any]) -> None:
    entry = extracted["entries"][1]
    witnesses = extracted["witness_vkeys_for_a.dsse_entry"]
    verifiers = [note.parse_verifier_key(vkey) for vkey in witnesses.values()]
    assert all(isinstance(v, cosignature.CosignatureVerifier) for v in verifiers)
    data = entry["checkpoint_note"].encode()
    _, opened = checkpoint.open_checkpoint(data, verifiers)
    assert [s.name for s in opened.verified] == list(witnesses)
    assert [s.name for s in opened.unverified] == ["log2025-alpha3.rekor.sigstage.dev"]
    # All three cosigned the same checkpoint on 2026-05-13 (UTC).
    times = {cosignature.cosignature_time(s) for s in opened.verified}
    assert all(1778630400 <= t < 1778716800 for t in times)
    _, everyone = checkpoint.open_checkpoint(data, [_log_verifier(entry), *verifiers])
    assert len(everyone.verified) == 4 and everyone.unverified == ()
    for verifier, cosig in zip(verifiers, opened.verified, strict=True):
        assert verifier.verify(opened.text.encode(), cosig.signature)
        assert not verifier.verify(b"other text\n", cosig.signature)
