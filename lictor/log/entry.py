"""Log entries: RFC 8785 canonical JSON objects of at most 65,535 bytes; no I/O.

Canonical bytes make the leaf hash a function of the entry's meaning, so any
party holding the JSON can recompute it with any RFC 8785 implementation.
JSON numbers are IEEE doubles there: RFC 8785 writes the double 1e16 as
``10000000000000000``, so `parse_entry` decodes integers beyond 2**53 as floats.

Most entries hold only ASCII keys, strings, safe integers, booleans and null;
for those, orjson with sorted keys writes exactly the RFC 8785 bytes (keys in
code-unit order, the same escapes), many times faster than the general
`rfc8785` encoder, which handles everything else. A property test checks the
two agree.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import rfc8785

from lictor.errors import EntryError
from lictor.log.tiles import MAX_ENTRY_SIZE

MAX_DOCUMENT_SIZE = 1 << 20
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def may_hold_long_integer(raw: bytes) -> bool:
    """Whether ``raw`` holds 19 digits in a row: maybe a JSON integer orjson would read
    as a float (`json` reads it exactly). Digits are mapped to one byte and the run
    looked for as a substring: a regex scan costs ten times as much."""
    return _LONG_RUN in raw.translate(_DIGITS_AS_ZERO)


def loads_exactly(raw: bytes) -> Any:
    """One JSON value, read with orjson unless it may hold an integer orjson would read
    as a float (`may_hold_long_integer`): `json` reads it exactly. Raises
    ``ValueError``."""
    return json.loads(raw) if may_hold_long_integer(raw) else orjson.loads(raw)


def canonical_entry(entry: dict[str, Any], limit: int = MAX_ENTRY_SIZE) -> bytes:
    """The canonical bytes of an entry, or `EntryError`. ``limit`` is the log's entry
    size unless the bytes are stored beside the log (`canonical_document`)."""
    if not isinstance(entry, dict):
        raise EntryError("an entry must be a JSON object")
    try:
        data = canonical_json(entry)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise EntryError(f"entry cannot be canonicalized: {e}") from e
    if len(data) > limit:
        raise EntryError(f"entry is {len(data)} bytes; the limit is {limit}")
    return data


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of any JSON value, of any size: orjson's where they are the
    same (see top), else the general encoder's, which raises what `rfc8785.dumps`
    raises on a value that is not canonical JSON."""
    return _fast_dumps(value) if is_plain(value) else rfc8785.dumps(value)


def canonical_plain(value: Any) -> bytes:
    """`canonical_json` of a value its caller knows to be plain (`is_plain`), without
    walking it again: for values built of typed parts, where only a part of unknown
    shape (a request's context) needs the walk."""
    return _fast_dumps(value)


def canonical_document(document: dict[str, Any]) -> bytes:
    """`canonical_entry` for a record stored beside the log (never a leaf), which may
    be larger: up to `MAX_DOCUMENT_SIZE` bytes (an execution's full context)."""
    return canonical_entry(document, MAX_DOCUMENT_SIZE)


_MAX_SAFE_INTEGER = 2**53 - 1
_MAX_FAST_NODES = 1 << 17  # more than a 64 KiB entry can hold; also stops on a cycle


def is_plain(value: Any) -> bool:
    """Whether ``value`` takes the fast path: no floats, ASCII keys, safe integers."""
    pending, seen = [value], 0
    while pending:
        v = pending.pop()
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        seen += 1
        if seen > _MAX_FAST_NODES:
            return False
        if t is dict:
            try:
                if not "".join(v).isascii():
                    return False
            except TypeError:  # a key that is not text
                return False
            pending.extend(v.values())
        elif t is list:
            pending.extend(v)
        elif t is int:
            if not -_MAX_SAFE_INTEGER <= v <= _MAX_SAFE_INTEGER:
                return False
        elif not _plain_subclass(v, pending):
            return False
    return True


def _plain_subclass(v: Any, pending: list[Any]) -> bool:
    """`is_plain` for instances of subclasses of the JSON types (an enum's text, a
    mapping type): what their base type would be."""
    if isinstance(v, dict):
        if not all(type(k) is str and k.isascii() for k in v):
            return False
        pending.extend(v.values())
        return True
    if isinstance(v, list):
        pending.extend(v)
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return abs(v) <= _MAX_SAFE_INTEGER
    return isinstance(v, (str, bool))


def _fast_dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a lone surrogate: let the general encoder refuse it
        return rfc8785.dumps(value)


def _json_int(text: str) -> int | float:
    """A JSON integer literal: exact up to 2**53, else the double RFC 8785 wrote."""
    if len(text) <= 17 and abs(int(text)) <= _MAX_SAFE_INTEGER:
        return int(text)
    return float(text)


def parse_entry(data: bytes) -> dict[str, Any]:
    """Decode entry bytes, insisting they are the canonical form of a JSON object."""
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryError(f"entry is {len(data)} bytes; the limit is {MAX_ENTRY_SIZE}")
    try:
        value = json.loads(data, parse_int=_json_int)
    except (ValueError, RecursionError) as e:
        raise EntryError("entry is not JSON") from e
    if not isinstance(value, dict):
        raise EntryError("an entry must be a JSON object")
    if canonical_entry(value) != data:
        raise EntryError("entry is not in RFC 8785 canonical form")
    return value
