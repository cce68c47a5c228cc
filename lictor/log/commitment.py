"""Salted commitments: what a public log entry says about a private event; no I/O.

An entry holds only what may be public plus ``commitment``, the hex SHA-256 of
``salt || canonical JSON(event)``. Whoever holds the event and its 32-byte salt
can show an auditor that the logged entry commits to exactly that event, while
the salt stops anyone from confirming a guess about it.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from lictor.errors import EntryError
from lictor.log.encoding import b64decode_strict
from lictor.log.entry import canonical_entry

SALT_SIZE = 32
PREFIX = "sha256:"


def commit_event(event: dict[str, Any], salt: bytes) -> str:
    """The commitment string ``sha256:<hex>`` to ``event`` under ``salt``."""
    return commit_canonical(canonical_entry(event), salt)


def commit_canonical(event: bytes, salt: bytes) -> str:
    """`commit_event` for an event already in its canonical bytes."""
    if len(salt) != SALT_SIZE:
        raise EntryError(f"salt must be {SALT_SIZE} bytes")
    return PREFIX + hashlib.sha256(salt + event).hexdigest()


def check_commitment(commitment: str, event: dict[str, Any], salt_b64: str) -> bool:
    """True if ``commitment`` commits to ``event`` under the base64 ``salt_b64``."""
    try:
        salt = b64decode_strict(salt_b64, EntryError, "salt is not base64")
        expected = commit_event(event, salt)
    except EntryError:
        return False
    return hmac.compare_digest(expected, commitment)
