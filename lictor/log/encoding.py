"""The strict text encodings shared by the log's formats; no I/O.

Every format in `lictor.log` writes bytes as standard, padded base64 (RFC 4648
§4) and numbers as ASCII decimals without leading zeros. The parsers here
accept exactly that and nothing else (no whitespace, no URL-safe alphabet, no
sign, no non-ASCII digits). A failure raises the error class and message the
calling format chooses, so each format keeps its own place in the error tree.
`describe_int` keeps numbers in error messages short, however large the input.
"""

from __future__ import annotations

import base64
import binascii

from lictor.errors import LictorError

_MESSAGE_BITS = 128


def b64encode(data: bytes) -> str:
    """Standard, padded base64 text of ``data`` (`base64.b64encode` without its wrapper:
    a receipt writes a few dozen per decision)."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64decode_strict(text: str, error: type[LictorError], message: str) -> bytes:
    """Decode standard padded base64, or raise ``error(message)``."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError as e:  # binascii.Error and UnicodeEncodeError are ValueErrors
        raise error(message) from e


def parse_canonical_decimal(text: str, maximum: int, error: type[LictorError], message: str) -> int:
    """Parse ``0`` or ``[1-9][0-9]*`` no larger than ``maximum``, or raise ``error(message)``.

    The length is checked before conversion, so a long digit string costs
    nothing and never reaches Python's 4,300-digit limit on ``int(text)``.
    """
    canonical = text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))
    if not canonical or len(text) > len(str(maximum)) or int(text) > maximum:
        raise error(message)
    return int(text)


def describe_int(n: int) -> str:
    """``n`` in decimal for an error message, or its size when that would be too long.

    Python refuses to print integers of more than 4,300 digits, and a message
    should stay short anyway.
    """
    if n.bit_length() <= _MESSAGE_BITS:
        return str(n)
    return f"{'-' if n < 0 else ''}<{n.bit_length()}-bit number>"
