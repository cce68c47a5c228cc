"""Where things are in Cedar source text: policy boundaries and error positions.

Pure: functions of strings (and of a parser passed in), no I/O.

Cedar's parser says *what* is wrong ("unexpected token `,`") but not *where*,
and it numbers policies ``policy0, policy1, …`` across whatever text it was
given. This module supplies the *where* without a second Cedar grammar:

- `split_policies` cuts a policy file at every top-level ``;`` (skipping string
  literals and ``//`` comments, the only places a ``;`` can hide), so each
  policy can be parsed alone and its first line known. Cedar has no other
  construct that contains a ``;``, so the pieces are exactly Cedar's policies.
- `error_offset` finds where a token error occurs by parsing prefixes of the
  text: a prefix that stops before the bad token fails differently (usually
  "unexpected end of input"), a prefix that includes it fails with the same
  message. Errors that are not about a token (Cedar reports them after reading
  a whole policy) get no offset here.
- `name_offset` points a schema error that names a type or action at the
  first place that name is written (best effort).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

ErrorOf = Callable[[str], str | None]
"""Parses text and returns the parser's error message, or None if it parsed."""

MAX_SCAN = 4096
_TOKEN_ERRORS = ("unexpected token", "invalid token")
_BACKTICKED = re.compile(r"`([^`]+)`")
_NAMED = (
    re.compile(r"type: ([\w:]+)$"),
    re.compile(r'Action::"((?:[^"\\]|\\.)*)"'),
    _BACKTICKED,
    re.compile(r": ([^\s`]+)$"),
)


@dataclass(frozen=True)
class Chunk:
    """One policy's text: from just after the previous ``;`` through its own ``;``.

    ``offset`` is where ``text`` starts in the file; ``start`` is where the
    policy's first character (an annotation's ``@`` or the effect) is.
    """

    text: str
    offset: int
    start: int


def _string_end(text: str, i: int) -> int | None:
    """Index just past the string literal opening at ``i``; None if it never closes."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    return None


def _skip_comment(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def split_policies(text: str) -> list[Chunk]:
    """The policies in ``text`` in order; whitespace and comments alone are no policy."""
    chunks: list[Chunk] = []
    begin, first, i = 0, -1, 0
    while i < len(text):
        c = text[i]
        if text.startswith("//", i):
            i = _skip_comment(text, i)
            continue
        if not c.isspace() and first < 0:
            first = i
        if c == '"':
            i = _string_end(text, i) or len(text)
            continue
        i += 1
        if c == ";":
            chunks.append(Chunk(text[begin:i], begin, first))
            begin, first = i, -1
    if first >= 0:
        chunks.append(Chunk(text[begin:], begin, first))
    return chunks


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``text``."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


def is_token_error(message: str) -> bool:
    return any(kind in message for kind in _TOKEN_ERRORS)


def error_offset(text: str, message: str, error_of: ErrorOf, *, closer: str = "") -> int | None:
    """Offset in ``text`` of the token that ``message`` (the error for all of ``text``) is about.

    With a ``closer`` (``";"`` for a policy) the prefixes are scanned one by
    one, each also tried with the closer appended: Cedar's parser recovers from
    a bad token and reports it only if the text then ends cleanly, so a bare
    prefix may report "unexpected end of input" instead. Without one (or past
    `MAX_SCAN` characters), a binary search over bare prefixes.
    """
    if not is_token_error(message):
        return None
    token = _BACKTICKED.search(message)
    if closer and len(text) <= MAX_SCAN and (token is None or token.group(1) != closer):
        end = _first_prefix(text, message, error_of, closer)
    else:
        end = _bisect_prefix(text, message, error_of)
    if end is None:
        return None
    opened = _open_string(text[:end])
    if opened is not None:
        return opened
    width = len(token.group(1)) if token and text[:end].endswith(token.group(1)) else 1
    return end - width


def _first_prefix(text: str, message: str, error_of: ErrorOf, closer: str) -> int | None:
    for end in range(1, len(text) + 1):
        if text[end - 1].isspace():
            continue
        if message in (error_of(text[:end]), error_of(text[:end] + closer)):
            return end
    return None


def _bisect_prefix(text: str, message: str, error_of: ErrorOf) -> int | None:
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if error_of(text[:mid]) == message:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo > 0 and error_of(text[:lo]) == message else None


def _open_string(text: str) -> int | None:
    """Where the string literal still open at the end of ``text`` starts, if one is."""
    i = 0
    while i < len(text):
        if text.startswith("//", i):
            i = _skip_comment(text, i)
        elif text[i] == '"':
            end = _string_end(text, i)
            if end is None:
                return i
            i = end
        else:
            i += 1
    return None


def name_offset(text: str, message: str) -> int | None:
    """Offset of the first place ``text`` writes the name ``message`` complains about."""
    for pattern in _NAMED:
        found = pattern.findall(message)
        if found:
            name = str(found[-1]).rsplit("::", 1)[-1]
            return _word_offset(text, name, second="declared twice" in message)
    return None


def _word_offset(text: str, word: str, *, second: bool) -> int | None:
    pattern = re.compile(r"(?<![\w])" + re.escape(word) + r"(?![\w])")
    hits = [m.start() for m in pattern.finditer(text)]
    if not hits:
        return None
    return hits[1] if second and len(hits) > 1 else hits[0]
