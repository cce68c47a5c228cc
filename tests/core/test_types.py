"""Entity refs, execution ids and times: strict parsing, round trips, fuzzing."""

from __future__ import annotations

import contextlib
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.core.types import (
    MAX_ID_LENGTH,
    MAX_TYPE_LENGTH,
    EntityRef,
    ExecutionState,
    check_execution_id,
    check_time_ms,
    execution_id_from,
)
from lictor.errors import InvalidRequestError

IDENT = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda s: s not in {"true", "false", "if", "then", "else", "in", "is", "like", "has"}
)
TYPES = st.lists(IDENT, min_size=1, max_size=3).map("::".join)
IDS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40
)  # any printable id, quotes and backslashes included
REFS = st.builds(EntityRef, TYPES, IDS)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ('Agent::"planner-7"', EntityRef("Agent", "planner-7")),
        ('Acme::Svc::"payments"', EntityRef("Acme::Svc", "payments")),
        ('Action::"a\\"b"', EntityRef("Action", 'a"b')),
        ('User::"c:\\\\tmp"', EntityRef("User", "c:\\tmp")),
        ('User::"x::\\"y"', EntityRef("User", 'x::"y')),
        ('User::"ünï cödé 🦀"', EntityRef("User", "ünï cödé 🦀")),
    ],
)
def test_text_form_round_trips(text: str, ref: EntityRef) -> None:
    assert EntityRef.parse(text) == ref
    assert str(ref) == text
    assert EntityRef.from_json(ref.to_json()) == ref
    assert EntityRef.from_wire(text) == EntityRef.from_wire(ref.to_json()) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Agent",
        'Agent::""',
        'Agent::"x',
        'Agent::"x"y"',
        'Agent::"x\\n"',
        'Agent::"tab\there"',
        'Agent:: "x"',
        ' Agent::"x"',
        'Agent::"x" ',
        '::"x"',
        'Ns::::Agent::"x"',
        '9Agent::"x"',
        'if::"x"',
        'Ns::true::"x"',
        '__cedar::"x"',
        'Agent-1::"x"',
        'Agént::"x"',
        'Agent::"\\"',
        "Agent::'x'",
        "A" * (MAX_TYPE_LENGTH + 1) + '::"x"',
        'Agent::"' + "x" * (MAX_ID_LENGTH + 1) + '"',
        'Agent::"' + "\\\\" * (MAX_ID_LENGTH + 1) + '"',
        "x" * 1_000_000,
    ],
)
def test_bad_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        EntityRef.parse(text)


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "Agent",
        {"type": "Agent"},
        {"type": "Agent", "id": "x", "extra": 1},
        {"type": "Agent", "id": 7},
        {"type": ["Agent"], "id": "x"},
        {"type": "Agent", "id": ""},
        {"__entity": {"type": "Agent", "id": "x"}},
    ],
)
def test_bad_json_is_refused(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        EntityRef.from_wire(value)


def test_longest_parts_are_accepted() -> None:
    ref = EntityRef("A" * MAX_TYPE_LENGTH, '"' * MAX_ID_LENGTH)
    assert EntityRef.parse(str(ref)) == ref


@given(REFS)
def test_generated_refs_round_trip(ref: EntityRef) -> None:
    assert EntityRef.parse(str(ref)) == ref
    assert EntityRef.from_json(ref.to_json()) == ref


@given(st.text(max_size=300))
def test_parse_fuzz_raises_only_invalid_request(text: str) -> None:
    try:
        ref = EntityRef.parse(text)
    except InvalidRequestError:
        return
    assert str(ref) == text  # whatever parses has exactly one spelling


@given(
    TYPES.map(lambda t: t + '::"') | st.just(""), st.text(max_size=60), st.sampled_from(['"', ""])
)
def test_parse_fuzz_near_valid(prefix: str, body: str, suffix: str) -> None:
    text = prefix + body + suffix
    with contextlib.suppress(InvalidRequestError):
        assert str(EntityRef.parse(text)) == text


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["type", "id", "x"]), JSONISH, max_size=3) | JSONISH)
def test_from_wire_fuzz_raises_only_invalid_request(value: object) -> None:
    with contextlib.suppress(InvalidRequestError):
        EntityRef.from_wire(value)


def test_terminal_states() -> None:
    terminal = {s for s in ExecutionState if s.is_terminal}
    assert terminal == {"completed", "denied", "revoked", "expired"}


def test_execution_id_from_bytes() -> None:
    assert execution_id_from(bytes(16)) == "ex_" + "a" * 26
    eid = execution_id_from(bytes(range(16)))
    assert check_execution_id(eid) == eid
    assert len(eid) == 29


@pytest.mark.parametrize("raw", [b"", bytes(15), bytes(17), "x" * 16, bytearray(16)])
def test_execution_id_needs_16_bytes(raw: object) -> None:
    with pytest.raises(InvalidRequestError):
        execution_id_from(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["", "ex_", "ex_" + "a" * 25, "ex_" + "a" * 27, "EX_" + "a" * 26, "ex_" + "A" * 26,
     "ex_" + "a" * 25 + "b", "ex_" + "1" * 26, None, 7],
)  # fmt: skip
def test_bad_execution_ids(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        check_execution_id(value)


@given(st.binary(min_size=16, max_size=16))
def test_execution_ids_round_trip(raw: bytes) -> None:
    eid = execution_id_from(raw)
    assert check_execution_id(eid) == eid


@given(st.text(max_size=40))
def test_execution_id_fuzz(text: str) -> None:
    with contextlib.suppress(InvalidRequestError):
        check_execution_id(text)


@pytest.mark.parametrize("value", [-1, 1.5, True, "1", None, 253_402_300_800_000])
def test_bad_times(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        check_time_ms(value)


def test_time_bounds() -> None:
    assert check_time_ms(0) == 0
    assert check_time_ms(253_402_300_799_999) == 253_402_300_799_999


def test_ids_refuse_exactly_the_control_characters_and_lone_surrogates() -> None:
    every = "".join(map(chr, [*range(0x10000), 0x10000, 0x1F980, 0xE0001, 0x10FFFF]))
    refused = {c for c in every if unicodedata.category(c) in ("Cc", "Cs")}
    for c in every:
        try:
            EntityRef("User", f"a{c}b")
        except InvalidRequestError:
            assert c in refused
        else:
            assert c not in refused
