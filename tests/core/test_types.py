"""Entity refs, execution ids and times: strict parsing, round trips, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.core import lease
from lictor.core.lineage import root_lineage
from lictor.core.types import (
    MAX_ID_LENGTH,
    MAX_TIME_MS,
    MAX_TYPE_LENGTH,
    EntityRef,
    ExecutionState,
    changed,
    check_execution_id,
    check_time_ms,
    new_execution_id,
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


CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
TIMES = st.integers(0, MAX_TIME_MS)
RANDOM10 = st.binary(min_size=10, max_size=10)


def decode(eid: str) -> tuple[int, bytes]:
    """The time and random bytes in a time-ordered id, decoded independently of `lictor`."""
    value = 0
    for c in eid.removeprefix("ex_"):
        value = value * 32 + CROCKFORD.index(c)
    return value >> 80, (value % 2**80).to_bytes(10, "big")


def random_form(raw: bytes) -> str:
    """An id as Lictor made them before they were time-ordered."""
    return "ex_" + base64.b32encode(raw).decode().rstrip("=").lower()


def test_new_execution_id_layout() -> None:
    assert new_execution_id(0, bytes(10)) == "ex_" + "0" * 26
    assert new_execution_id(MAX_TIME_MS, b"\xff" * 10) == "ex_76ez91zpzz" + "z" * 16
    # 2024-01-01T00:00:00Z, as ULID spells it (in capitals)
    assert new_execution_id(1_704_067_200_000, bytes(10)).startswith("ex_01hk153x00")


@pytest.mark.parametrize(
    ("now", "raw"),
    [(-1, bytes(10)), (MAX_TIME_MS + 1, bytes(10)), (1.5, bytes(10)), (True, bytes(10)),
     (0, b""), (0, bytes(9)), (0, bytes(11)), (0, bytes(16)), (0, "x" * 10), (0, bytearray(10))],
)  # fmt: skip
def test_new_execution_id_needs_a_time_and_10_bytes(now: object, raw: object) -> None:
    with pytest.raises(InvalidRequestError):
        new_execution_id(now, raw)  # type: ignore[arg-type]


@given(TIMES, RANDOM10)
def test_execution_ids_round_trip(now: int, raw: bytes) -> None:
    eid = new_execution_id(now, raw)
    assert check_execution_id(eid) == eid
    assert len(eid) == 29
    assert decode(eid) == (now, raw)


@given(TIMES, TIMES, RANDOM10, RANDOM10)
def test_later_ids_sort_later(t1: int, t2: int, r1: bytes, r2: bytes) -> None:
    a, b = new_execution_id(t1, r1), new_execution_id(t2, r2)
    if t1 < t2:
        assert a < b
        assert a.encode() < b.encode()
    assert (a < b) == ((t1, r1) < (t2, r2))


@given(st.lists(st.tuples(TIMES, RANDOM10), min_size=2, max_size=50))
def test_sorting_ids_sorts_by_time(made: list[tuple[int, bytes]]) -> None:
    ids = {new_execution_id(now, raw): now for now, raw in made}
    times = [ids[eid] for eid in sorted(ids)]
    assert times == sorted(times)


@given(st.binary(min_size=16, max_size=16))
def test_ids_in_the_random_form_stay_valid(raw: bytes) -> None:
    eid = random_form(raw)
    assert check_execution_id(eid) == eid


@pytest.mark.parametrize(
    "value",
    ["ex_" + "a" * 26, "ex_" + "7" * 26, random_form(bytes(range(16))), random_form(b"\xff" * 16),
     "ex_" + "0" * 26, "ex_7" + "z" * 25, "ex_01hk153x00" + "0" * 16],
)  # fmt: skip
def test_good_execution_ids(value: str) -> None:
    assert check_execution_id(value) == value


@pytest.mark.parametrize(
    "value",
    ["", "ex_", "ex_" + "a" * 25, "ex_" + "a" * 27, "EX_" + "a" * 26, "ex_" + "A" * 26,
     "ex_" + "a" * 25 + "b",  # random form, non-zero padding bits
     "ex_8" + "0" * 25, "ex_z" + "0" * 25,  # more than 128 bits
     "ex_0" + "i" * 25, "ex_0" + "l" * 25, "ex_0" + "o" * 25, "ex_0" + "u" * 25,  # not Crockford
     "ex_01HK153X00" + "0" * 16, "ex_" + "0" * 25 + "-", "ex_" + "0" * 26 + "\n",
     "ex_" + "١" * 26, None, 7, b"ex_" + b"0" * 26],
)  # fmt: skip
def test_bad_execution_ids(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        check_execution_id(value)


@given(st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=26, max_size=26))
def test_check_accepts_exactly_the_canonical_spellings(body: str) -> None:
    eid = "ex_" + body
    time_ordered = body[0] in "01234567" and all(c in CROCKFORD for c in body)
    random_spelling = all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in body) and (
        random_form(base64.b32decode(body.upper() + "======")) == eid
    )
    if time_ordered and decode(eid)[0] <= MAX_TIME_MS:  # beyond: a valid id no clock makes
        assert new_execution_id(*decode(eid)) == eid
    if time_ordered or random_spelling:
        assert check_execution_id(eid) == eid
    else:
        with pytest.raises(InvalidRequestError):
            check_execution_id(eid)


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


def test_changed_is_dataclasses_replace() -> None:
    execution = lease.request(
        execution_id="ex_" + "a" * 26,
        principal=EntityRef("User", "alice"),
        action=EntityRef("Action", "view"),
        resource=EntityRef("Photo", "p1"),
        context={"a": 1},
        runtime_id="rt",
        lineage=root_lineage("ex_" + "a" * 26, EntityRef("User", "alice")),
        now_ms=1_000,
    )
    changes = {"reason": "because", "version": 7}
    assert changed(execution, **changes) == dataclasses.replace(execution, **changes)
    assert execution.reason is None and execution.version != 7  # the original stands
    with pytest.raises(TypeError, match="no field"):
        changed(execution, colour="red")
    ref = EntityRef("User", "alice")  # validates in __post_init__: replace runs it
    with pytest.raises(InvalidRequestError):
        changed(ref, type="not a type")


def test_a_reference_s_text_is_made_once_and_never_goes_stale() -> None:
    ref = EntityRef("User", 'a"b\\c')
    assert str(ref) == 'User::"a\\"b\\\\c"' and str(ref) is str(ref)  # made once
    assert EntityRef.parse(str(ref)) == ref
    # a copy with other fields is a new reference with its own text, even for a class
    # `changed` would otherwise copy attribute by attribute
    assert str(changed(ref, id="d")) == 'User::"d"'

    @dataclasses.dataclass(frozen=True)
    class Cached:
        n: int

        @functools.cached_property
        def twice(self) -> int:
            return self.n * 2

    one = Cached(1)
    assert one.twice == 2 and changed(one, n=5).twice == 10
