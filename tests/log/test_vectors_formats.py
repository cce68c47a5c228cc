"""transparency-dev/formats vectors: ECDSA (0x02) notes, an Ed25519 key pair,
checkpoint marshal/unmarshal and tlog-proof parsing.

Where lictor is deliberately stricter than that library the tests assert our
behaviour and say why.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from lictor.errors import CheckpointError, KeyFormatError, ProofError, SignatureError
from lictor.log import checkpoint, note
from lictor.log.proof import TlogProof, parse_tlog_proof


@pytest.fixture(scope="module")
def fv(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (vectors / "transparency-dev-formats" / "format_vectors.json").read_text()
    )
    return data


def test_ecdsa_notes(fv: dict[str, Any]) -> None:
    cases = fv["ecdsa_note_vectors"]["cases"]
    assert [c["name"] for c in cases] == [
        "sigstore works",
        "pixel works",
        "invalid name",
        "invalid signature",
    ]
    for case in cases:
        verifier = note.parse_verifier_key(case["vkey"])
        assert isinstance(verifier, note.ECDSAVerifier)
        spki = base64.b64decode(case["vkey"].split("+", 2)[2])[1:]
        assert verifier.key_id == int.from_bytes(hashlib.sha256(spki).digest()[:4], "big")
        if case["wantErr"]:
            with pytest.raises(SignatureError):
                note.open_note(case["note"].encode(), [verifier])
        else:
            opened = note.open_note(case["note"].encode(), [verifier])
            assert [s.name for s in opened.verified] == [verifier.name]
            cp = checkpoint.parse_checkpoint(opened.text)
            assert cp.size in (798034, 10)


def test_ecdsa_key_id_is_not_name_bound(fv: dict[str, Any]) -> None:
    # "invalid name" reuses sigstore's key under another name with the same
    # key ID: the key parses, but it does not match the note's signer name.
    works, _, renamed, _ = fv["ecdsa_note_vectors"]["cases"]
    a, b = note.parse_verifier_key(works["vkey"]), note.parse_verifier_key(renamed["vkey"])
    assert a.key_id == b.key_id == 0xC0D23D6A and a.name != b.name


def test_rfc6962_tree_head_vkey_is_unsupported(fv: dict[str, Any]) -> None:
    # lictor has no verifier for type 0x05 (static-ct-api TreeHeadSignature).
    with pytest.raises(KeyFormatError, match="0x05"):
        note.parse_verifier_key(fv["static_ct_rfc6962_vkey_type_0x05"])


def test_ed25519_key_pair(fv: dict[str, Any]) -> None:
    pair = fv["ed25519_key_pair"]
    signer = note.parse_signer_key(pair["skey"])
    assert signer.skey() == pair["skey"]
    assert signer.verifier.vkey() == pair["vkey"]
    verifier = note.parse_verifier_key(pair["vkey"])
    signed = note.sign_note("logandmap\n1\n" + "A" * 43 + "=\n", [signer])
    assert [s.name for s in note.open_note(signed, [verifier]).verified] == ["logandmap"]


def test_checkpoint_marshal(fv: dict[str, Any]) -> None:
    cases = fv["checkpoint_marshal"]
    assert len(cases) == 2
    for case in cases:
        root = case["hash_ascii"].encode()
        root_b64 = base64.b64encode(root).decode()
        assert case["want"] == f"{case['origin']}\n{case['size']}\n{root_b64}\n"
        # Deliberately stricter than transparency-dev/formats: a checkpoint
        # root is exactly 32 bytes, so 'bananas' is not a root hash.
        with pytest.raises(CheckpointError):
            checkpoint.Checkpoint(case["origin"], case["size"], root)
        with pytest.raises(CheckpointError):
            checkpoint.parse_checkpoint(case["want"])
        real = hashlib.sha256(root).digest()
        text = case["want"].replace(
            base64.b64encode(root).decode(), base64.b64encode(real).decode()
        )
        assert checkpoint.Checkpoint(case["origin"], case["size"], real).text() == text


ROOT_B64 = base64.b64encode(hashlib.sha256(b"a real root").digest()).decode()


def test_checkpoint_unmarshal(fv: dict[str, Any]) -> None:
    cases = fv["checkpoint_unmarshal"]
    assert len(cases) == 12
    for case in cases:
        # Every vector uses a root that is not 32 bytes long, so every one is
        # rejected by our stricter parser, valid ones included.
        with pytest.raises(CheckpointError):
            checkpoint.parse_checkpoint(case["input"])
        lines = case["input"].split("\n")
        if len(lines) < 4 or "roothash" in case["desc"]:
            assert case["wantErr"]
            continue
        text = "\n".join([*lines[:2], ROOT_B64, *lines[3:]])
        if case["wantErr"]:
            # Still wrong for its own reason (origin or size) with a real root.
            with pytest.raises(CheckpointError):
                checkpoint.parse_checkpoint(text)
            continue
        # With a real 32-byte root, the valid vectors parse, with the
        # trailing lines as extension lines...
        rest = case.get("wantRest", "")
        if "\n\n" in "\n" + rest:
            # ...except trailing empty lines: transparency-dev/formats accepts
            # them, strict C2SP parsing (and lictor) rejects them.
            assert case["desc"] == "valid with trailing newlines"
            with pytest.raises(CheckpointError):
                checkpoint.parse_checkpoint(text)
            continue
        cp = checkpoint.parse_checkpoint(text)
        assert (cp.origin, cp.size) == (lines[0], int(lines[1]))
        assert cp.extensions == tuple(rest.splitlines())
        assert cp.text() == text


def test_tlog_proof_unmarshal_errors(fv: dict[str, Any]) -> None:
    cases = fv["tlog_proof_unmarshal_errors"]
    assert len(cases) == 6
    for case in cases:
        with pytest.raises(ProofError, match=case["wantErrSubstr"]):
            parse_tlog_proof(case["input"])


def _hash(spec: str) -> bytes:
    assert spec.startswith("sha256('") and spec.endswith("')")
    return hashlib.sha256(spec[len("sha256('") : -2].encode()).digest()


def test_tlog_proof_marshal(fv: dict[str, Any]) -> None:
    cases = fv["tlog_proof_marshal_examples"]
    assert len(cases) == 3
    for case in cases:
        extra = case["extra"].encode() if "extra" in case else None
        hashes = tuple(_hash(h) for h in case["hashes"])
        proof = TlogProof(case["index"], hashes, case["checkpoint"].encode(), extra)
        assert proof.encode() == case["want"]
        assert parse_tlog_proof(case["want"]) == proof
