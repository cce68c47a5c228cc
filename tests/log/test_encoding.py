"""Unit tests for `lictor.log.encoding`: strict base64, canonical decimals, short numbers."""

from __future__ import annotations

import base64

import pytest

from lictor.errors import CheckpointError, KeyFormatError, NoteError, ProofError
from lictor.log.encoding import b64decode_strict, b64encode, describe_int, parse_canonical_decimal


@pytest.mark.parametrize("data", [b"", b"\x00", b"ab", b"abc", bytes(range(256))])
def test_b64decode_strict_round_trip(data: bytes) -> None:
    assert b64decode_strict(base64.b64encode(data).decode(), NoteError, "m") == data
    assert b64encode(data) == base64.b64encode(data).decode()  # what every format writes
    assert b64decode_strict(b64encode(data), NoteError, "m") == data


@pytest.mark.parametrize(
    "text",
    ["YQ", "YQ=", "YWJj\n", " YWJj", "YW Jj", "_-8=", "YQ==YQ==", "é", "Y\x00Q=", "=YQ="],
)
@pytest.mark.parametrize("error", [NoteError, KeyFormatError, CheckpointError, ProofError])
def test_b64decode_strict_raises_the_callers_error(text: str, error: type[NoteError]) -> None:
    with pytest.raises(error, match=r"^bad base64$"):
        b64decode_strict(text, error, "bad base64")


@pytest.mark.parametrize(
    "text,maximum,value",
    [("0", 0, 0), ("7", 9, 7), ("10", 10, 10), (str(2**63 - 1), 2**63 - 1, 2**63 - 1)],
)
def test_parse_canonical_decimal(text: str, maximum: int, value: int) -> None:
    assert parse_canonical_decimal(text, maximum, ProofError, "m") == value


@pytest.mark.parametrize(
    "text,maximum",
    [
        ("", 9),
        ("00", 9),
        ("01", 9),
        ("+1", 9),
        ("-1", 9),
        (" 1", 9),
        ("1 ", 9),
        ("1.0", 9),
        ("0x1", 9),
        ("١", 9),  # ARABIC-INDIC DIGIT ONE: isdigit() but not ASCII
        ("²", 9),  # SUPERSCRIPT TWO: isdigit() but not a decimal
        ("10", 9),
        (str(2**63), 2**63 - 1),
        ("9" * 100_000, 2**64 - 1),  # past Python's 4,300-digit int() limit
    ],
)
def test_parse_canonical_decimal_rejects(text: str, maximum: int) -> None:
    with pytest.raises(CheckpointError, match=r"^not canonical$"):
        parse_canonical_decimal(text, maximum, CheckpointError, "not canonical")


@pytest.mark.parametrize(
    "n,text",
    [
        (0, "0"),
        (-5, "-5"),
        (2**63, str(2**63)),
        (2**128 - 1, str(2**128 - 1)),
        (2**128, "<129-bit number>"),
        pytest.param(-(2**20_000), "-<20001-bit number>", id="-2^20000"),
    ],
)
def test_describe_int(n: int, text: str) -> None:
    assert describe_int(n) == text
