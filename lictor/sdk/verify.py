"""Checking a Lictor receipt offline, with nothing but the log's verifier key.

A receipt (from a request, a renewal that verified something new, or a
completion) proves that its entry is in the log. `verify_receipt` accepts it
only if all of this holds, and raises a `LogError` subclass otherwise:

- every redundant copy in the receipt (index, leaf hash, tree size, inclusion
  path, checkpoint) agrees with its tlog-proof, and, when it carries the
  private event and salt, they open the entry's commitment
  (`lictor.receipt.read_proof_file`);
- the checkpoint is signed by the key and names the key's origin (or the one
  given), and the entry is included in that checkpoint's tree
  (`lictor.audit.verify_proof`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lictor.audit import verify_proof
from lictor.errors import ProofError
from lictor.log.checkpoint import Checkpoint
from lictor.log.entry import parse_entry
from lictor.log.note import Verifier, parse_verifier_key
from lictor.receipt import read_proof_file


@dataclass(frozen=True)
class VerifiedReceipt:
    """What a receipt proved: its entry, where it is, and the private event if it
    carried one that opened the entry's commitment."""

    index: int
    entry: dict[str, Any]
    checkpoint: Checkpoint
    event: dict[str, Any] | None


def verify_receipt(
    receipt: Mapping[str, Any] | str | bytes, vkey: str | Verifier, origin: str | None = None
) -> VerifiedReceipt:
    """Verify ``receipt`` (its JSON text or object) against the log key ``vkey``."""
    verifier = parse_verifier_key(vkey) if isinstance(vkey, str) else vkey
    read = read_proof_file(_receipt_bytes(receipt))
    if read.entry is None:
        raise ProofError("a receipt must carry its entry, not just a tlog-proof")
    checkpoint = verify_proof(read.proof, read.entry, verifier, origin)
    event = _event(receipt) if read.event_checked else None
    return VerifiedReceipt(read.proof.index, parse_entry(read.entry), checkpoint, event)


def _receipt_bytes(receipt: Mapping[str, Any] | str | bytes) -> bytes:
    if isinstance(receipt, bytes):
        return receipt
    if isinstance(receipt, str):
        return receipt.encode()
    return json.dumps(dict(receipt)).encode()


def _event(receipt: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    value = receipt if isinstance(receipt, Mapping) else json.loads(receipt)
    event: dict[str, Any] = value["event"]
    return event
