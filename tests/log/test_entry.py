"""Unit tests for `lictor.log.entry`: canonical JSON entries of at most 65,535 bytes."""

from __future__ import annotations

import re
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from lictor.errors import EntryError
from lictor.log.entry import canonical_entry, canonical_json, may_hold_long_integer, parse_entry
from lictor.log.tiles import MAX_ENTRY_SIZE

from ..strategies import json_values


def test_canonical_form() -> None:
    entry = {"b": [1, 2.5, True, None], "a": "é\u2028", "c": {"z": 1, "y": -0.0}}
    data = canonical_entry(entry)
    assert data == '{"a":"é\u2028","b":[1,2.5,true,null],"c":{"y":0,"z":1}}'.encode()
    assert parse_entry(data) == entry
    assert canonical_entry({}) == b"{}"


def _sized(total: int) -> dict[str, Any]:
    """An entry whose canonical form is exactly ``total`` bytes."""
    return {"p": "x" * (total - len(b'{"p":""}'))}


def test_size_limit() -> None:
    assert MAX_ENTRY_SIZE == 65535
    data = canonical_entry(_sized(MAX_ENTRY_SIZE))
    assert len(data) == MAX_ENTRY_SIZE
    assert parse_entry(data) == _sized(MAX_ENTRY_SIZE)
    with pytest.raises(EntryError):
        canonical_entry(_sized(MAX_ENTRY_SIZE + 1))
    too_big = b'{"p":"' + b"x" * (MAX_ENTRY_SIZE - 7) + b'"}'
    assert len(too_big) == MAX_ENTRY_SIZE + 1
    with pytest.raises(EntryError):
        parse_entry(too_big)


def test_numbers_are_doubles() -> None:
    # RFC 8785 writes integral doubles without a fraction or exponent, so the
    # canonical text of 1e16 is an integer beyond 2**53: it decodes as a double.
    for value in [1e16, 2.0**53, -(2.0**60), 1e21 - 2**17]:
        data = canonical_entry({"a": value})
        assert b"e" not in data and b"." not in data
        assert parse_entry(data) == {"a": value}
        assert isinstance(parse_entry(data)["a"], float)
    assert canonical_entry({"a": 1e21}) == b'{"a":1e+21}'
    safe = 2**53 - 1
    assert parse_entry(canonical_entry({"a": safe, "b": -safe})) == {"a": safe, "b": -safe}
    assert isinstance(parse_entry(b'{"a":9007199254740991}')["a"], int)
    # Not the canonical text of any double (it rounds to 2**53).
    with pytest.raises(EntryError):
        parse_entry(b'{"a":9007199254740993}')
    with pytest.raises(EntryError):
        parse_entry(b'{"a":' + b"9" * 400 + b"}")


@pytest.mark.parametrize(
    "entry",
    [
        [],
        "text",
        None,
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": 2**53},
        {"a": b"bytes"},
        {"a": {1, 2}},
        {1: "non-string key"},
        {"a": object()},
        {"a": "\ud800"},
    ],
)
def test_canonical_entry_rejects(entry: Any) -> None:
    with pytest.raises(EntryError):
        canonical_entry(entry)


def test_deep_nesting_is_an_entry_error() -> None:
    entry: dict[str, Any] = {}
    inner = entry
    for _ in range(20000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(EntryError):
        canonical_entry(entry)
    depth = 30000
    with pytest.raises(EntryError):
        parse_entry(b'{"a":' + b"[" * depth + b"]" * depth + b"}")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'"s"',
        b"1",
        b"null",
        b'{"a":1} ',
        b' {"a":1}',
        b'{"a": 1}',
        b'{"b":1,"a":2}',
        b'{"a":1,"a":1}',
        b'{"a":1.0}',
        b'{"a":1e2}',
        b'{"a":-0}',
        b'{"a":"\\u00e9"}',
        b'{"a":"\\/"}',
        b'{"a":NaN}',
        b'{"a":9007199254740993}',
        b'{"a":"\xff"}',
        b'{"a":"\\ud800"}',
        '{"a":1}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",
    ],
)
def test_parse_entry_rejects_non_canonical_bytes(data: bytes) -> None:
    with pytest.raises(EntryError):
        parse_entry(data)


_ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=8)
_plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(max_codepoint=127), max_size=8), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(
    value=st.dictionaries(
        st.text(alphabet=st.characters(max_codepoint=127), max_size=8), _plain_values, max_size=6
    )
)
def test_the_fast_path_writes_exactly_the_rfc8785_bytes(value: dict[str, Any]) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(EntryError):
            canonical_entry(value)
        return
    if len(expected) <= 65535:
        assert canonical_entry(value) == expected


@given(st.binary(max_size=200) | st.text('0123456789x"', max_size=60).map(str.encode))
def test_a_long_integer_is_spotted_as_nineteen_digits_in_a_row(raw: bytes) -> None:
    assert may_hold_long_integer(raw) == (re.search(rb"[0-9]{19}", raw) is not None)


def test_eighteen_digits_are_not_a_long_integer_and_nineteen_are() -> None:
    assert not may_hold_long_integer(b'{"x": 123456789012345678, "y": "1234567890"}')
    assert may_hold_long_integer(b'{"x": 1234567890123456789}')


@given(json_values(max_leaves=20))
def test_canonical_json_is_rfc8785_for_any_value(value: Any) -> None:
    """Any JSON value, top level included, floats, long integers and keys beyond
    ASCII too: the general encoder's bytes, or its refusal."""
    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, ValueError) as e:
        with pytest.raises(type(e)):
            canonical_json(value)
        return
    assert canonical_json(value) == expected
