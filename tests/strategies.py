"""Hypothesis strategies more than one test module draws from."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Any JSON value: floats, integers beyond 64 bits and keys beyond ASCII too."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def mutations(messages: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """``messages`` with one to four bytes deleted, inserted (line breaks, spaces,
    colons, digits, NUL), replaced, or the rest cut off: what a parser of a wire
    format must read or refuse, never misread."""

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(messages))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
            if kind == "delete":
                del data[at : at + draw(st.integers(1, 8))]
            elif kind == "insert":
                inserted = [b"\r", b"\n", b"\r\n", b" ", b":", b"0", b"\0"]
                data[at:at] = draw(st.sampled_from(inserted))
            elif kind == "replace" and at < len(data):
                data[at] = draw(st.integers(0, 255))
            else:
                del data[at:]
        return bytes(data)

    return mutated()
