"""What `lictor log verify` reads: tlog-proof text, or a Lictor receipt; no I/O.

A receipt (`lictor.service.log.Receipt.to_json`) carries its tlog-proof beside
redundant copies of what the proof holds: index, leaf hash, tree size,
inclusion path and checkpoint. A verifier checks only the tlog-proof, so each
copy that is present must agree with it, or a receipt could say one thing and
prove another. Signatures are not checked here: see `lictor.audit.verify_proof`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lictor.audit import read_checkpoint
from lictor.errors import ProofError
from lictor.log.commitment import check_commitment
from lictor.log.encoding import b64encode
from lictor.log.entry import canonical_entry
from lictor.log.merkle import leaf_hash
from lictor.log.proof import TlogProof, parse_tlog_proof


@dataclass(frozen=True)
class ProofFile:
    """A parsed proof file: the tlog-proof, and for a receipt its entry bytes and
    whether it carried a private event that was checked against the entry's commitment."""

    proof: TlogProof
    entry: bytes | None = None
    event_checked: bool = False


def read_proof_file(data: bytes) -> ProofFile:
    """Parse tlog-proof text, or a Lictor receipt.

    A receipt is ``{"index": n, "entry": {...}, "tlog_proof": "<text>", ...}``;
    its entry bytes are the RFC 8785 form of ``entry`` and its index must be the
    proof's. Every redundant field present must agree with the tlog-proof:
    ``leaf_hash`` (of the entry), ``tree_size`` (the checkpoint's size),
    ``inclusion_proof`` (the proof's hashes) and ``checkpoint`` (its note). If
    it also holds ``event`` and ``salt``, they must open the entry's
    ``commitment``. Signatures are not checked here: see `verify_proof`.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProofError("proof file is not UTF-8") from e
    if not text.lstrip().startswith("{"):
        return ProofFile(parse_tlog_proof(text))
    try:
        receipt = json.loads(text)
    except ValueError as e:
        raise ProofError(f"receipt is not JSON: {e}") from e
    except RecursionError as e:
        raise ProofError("receipt is nested too deeply") from e
    try:
        return _read_receipt(receipt)
    except RecursionError as e:  # json.loads stopped just short of the limit
        raise ProofError("receipt is nested too deeply") from e


def _read_receipt(receipt: Any) -> ProofFile:
    if not isinstance(receipt, dict) or not isinstance(receipt.get("tlog_proof"), str):
        raise ProofError("receipt has no tlog_proof text")
    if not isinstance(receipt.get("entry"), dict):
        raise ProofError("receipt has no entry object")
    proof = parse_tlog_proof(receipt["tlog_proof"])
    entry = canonical_entry(receipt["entry"])
    _check_receipt_fields(receipt, proof, entry)
    return ProofFile(proof, entry, _check_event(receipt))


def _check_receipt_fields(receipt: dict[str, Any], proof: TlogProof, entry: bytes) -> None:
    """Raise `ProofError` unless every redundant receipt field agrees with ``proof``."""
    index = receipt.get("index")
    if type(index) is not int or index != proof.index:
        raise ProofError(
            f"receipt index {_brief(index)} differs from the proof's index {proof.index}"
        )
    if "leaf_hash" in receipt and receipt["leaf_hash"] != b64encode(leaf_hash(entry)):
        raise ProofError("the receipt's leaf_hash is not the hash of its entry")
    if "checkpoint" in receipt and receipt["checkpoint"] != proof.checkpoint.decode():
        raise ProofError("the receipt's checkpoint differs from the one in its tlog_proof")
    if "inclusion_proof" in receipt and receipt["inclusion_proof"] != [
        b64encode(h) for h in proof.hashes
    ]:
        raise ProofError("the receipt's inclusion_proof differs from the hashes in its tlog_proof")
    if "tree_size" in receipt:
        _check_tree_size(receipt["tree_size"], read_checkpoint(proof.checkpoint).size)


def _check_tree_size(tree_size: Any, size: int) -> None:
    if type(tree_size) is not int or tree_size != size:
        raise ProofError(
            f"the receipt's tree_size {_brief(tree_size)} differs from its checkpoint's size {size}"
        )


def _brief(value: Any) -> str:
    """A (64-bit) integer as itself, anything else by its type: a message stays short."""
    if value is None:
        return "(missing)"
    if type(value) is int and value.bit_length() <= 64:
        return str(value)
    return f"(a {'large ' if type(value) is int else ''}{type(value).__name__})"


def _check_event(receipt: dict[str, Any]) -> bool:
    event, salt = receipt.get("event"), receipt.get("salt")
    if event is None and salt is None:
        return False
    commitment = receipt["entry"].get("commitment")
    if not (isinstance(event, dict) and isinstance(salt, str) and isinstance(commitment, str)):
        raise ProofError("the receipt's event, salt or entry commitment is malformed")
    if not check_commitment(commitment, event, salt):
        raise ProofError("the receipt's event and salt do not open the entry's commitment")
    return True
