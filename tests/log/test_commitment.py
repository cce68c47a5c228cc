"""Salted commitments: open only with the exact event and salt."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.errors import EntryError
from lictor.log.commitment import check_commitment, commit_event
from lictor.log.entry import canonical_entry

SALT = bytes(range(32))
EVENT = {"kind": "note", "text": "break-glass", "by": "admin"}


def test_commitment_is_sha256_of_salt_and_canonical_event() -> None:
    expected = hashlib.sha256(SALT + canonical_entry(EVENT)).hexdigest()
    assert commit_event(EVENT, SALT) == "sha256:" + expected
    reordered = {"by": "admin", "text": "break-glass", "kind": "note"}
    assert commit_event(reordered, SALT) == commit_event(EVENT, SALT)


def test_commitment_opens_only_with_the_same_event_and_salt() -> None:
    commitment = commit_event(EVENT, SALT)
    salt_b64 = base64.b64encode(SALT).decode()
    assert check_commitment(commitment, EVENT, salt_b64)
    assert not check_commitment(commitment, {**EVENT, "text": "other"}, salt_b64)
    other_salt = base64.b64encode(bytes(32)).decode()
    assert not check_commitment(commitment, EVENT, other_salt)
    assert not check_commitment(commitment, EVENT, "not base64!")
    assert not check_commitment(commitment, EVENT, base64.b64encode(b"short").decode())


def test_salt_must_be_32_bytes() -> None:
    with pytest.raises(EntryError):
        commit_event(EVENT, b"short")


@given(salt=st.text(max_size=60), text=st.text(max_size=30))
def test_check_commitment_never_raises(salt: str, text: str) -> None:
    assert check_commitment("sha256:00", {"text": text}, salt) is False
