"""The governance vocabulary as frozen values: entity refs, executions, leases.

Pure: no I/O, no clock, no randomness. Every value here is immutable, and
every parser is strict (it accepts exactly one spelling and raises
`InvalidRequestError` on anything else, however long or odd the input).

Invariants the types carry (the rules in `lease` and `lineage` keep them):

- An `EntityRef` has a Cedar entity type (``Ns::Type``, identifiers that are not
  Cedar reserved words) of at most `MAX_TYPE_LENGTH` characters and a non-empty
  id of at most `MAX_ID_LENGTH` characters with no control characters or lone
  surrogates. Its text form ``Type::"id"`` escapes only ``"`` and ``\\``.
- An execution id is ``ex_`` followed by 26 characters of lowercase Crockford
  base32 (``0-9a-z`` without ``i l o u``, in ASCII order) of 128 bits: 48 bits
  of milliseconds since the epoch, then 80 random bits, big-endian (ULID's
  layout). Ids made later sort later as text, so b-trees keyed by id grow at
  their right edge. `new_execution_id` takes the time and the random bytes in
  (``new_execution_id(now_ms, os.urandom(10))``). Ids made before this form
  (``ex_`` + RFC 4648 base32 of 16 random bytes) stay valid; they are not in
  time order, and sort after every id made since.
- `Execution.delegation` is the chain of principals from the root down to this
  execution's own principal: ``len(delegation) == depth + 1`` and
  ``delegation[-1] == principal``. A root has ``parent_id is None``,
  ``root_id == id`` and ``depth == 0``.
- `Execution.version` starts at 1 and grows by one on every state change; the
  store compares and swaps on it.
- A `Lease` is live while ``now_ms < expires_at_ms`` (the same boundary as a
  JWT's ``exp``). ``renew_by_ms`` is a third of the way from issue to expiry:
  an enforcement point that renews by then still has two thirds of its lease
  for retries. ``ttl_ms`` is the TTL asked for; ``expires_at_ms`` may come
  sooner when a parent's lease caps it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, TypeVar

from lictor.errors import InvalidRequestError

MAX_TYPE_LENGTH = 128
MAX_ID_LENGTH = 512
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EXECUTION_ID_PREFIX = "ex_"
EXECUTION_ID_RANDOM_BYTES = 10

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = frozenset({"true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar"})
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # by 10-bit value
_EXECUTION_ID_SHAPE = re.compile(r"ex_[0-9a-z]{26}")
# 26 characters hold 130 bits; the top two are zero, so the first is 0-7
_TIME_ORDERED_ID = re.compile(r"ex_[0-7][0-9a-hjkmnp-tv-z]{25}")
# 16 bytes as RFC 4648 base32 end in two zero bits: the last character is one of 8
_RANDOM_ID = re.compile(r"ex_[a-z2-7]{25}[aeimquy4]")
# Unicode categories Cc and Cs, which the stability policy fixes to these code points
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MAX_ENTITY_TEXT = MAX_TYPE_LENGTH + 4 + 2 * MAX_ID_LENGTH


def check_time_ms(value: object, name: str = "time") -> int:
    """``value`` as milliseconds since the epoch, or `InvalidRequestError`."""
    if type(value) is not int or not 0 <= value <= MAX_TIME_MS:
        raise InvalidRequestError(f"{name} must be an integer number of ms in [0, {MAX_TIME_MS}]")
    return value


def _check_type_name(name: str) -> None:
    if not 0 < len(name) <= MAX_TYPE_LENGTH:
        raise InvalidRequestError(f"entity type must be 1..{MAX_TYPE_LENGTH} characters")
    for part in name.split("::"):
        if not _IDENT.fullmatch(part) or part in _RESERVED:
            raise InvalidRequestError(f"entity type {name!r} is not a Cedar type name")


def check_label(value: object, what: str, limit: int) -> str:
    """``value`` if it is 1..``limit`` characters, none a control character or lone surrogate."""
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidRequestError(f"{what} must be a string of 1..{limit} characters")
    if _CONTROL_OR_SURROGATE.search(value):
        raise InvalidRequestError(f"{what} has a control character or a lone surrogate")
    return value


def _unescape_id(quoted: str) -> str:
    """The id inside ``"..."``; only ``\\"`` and ``\\\\`` are escapes."""
    out: list[str] = []
    chars = iter(quoted)
    for c in chars:
        if c == '"':
            raise InvalidRequestError("an unescaped '\"' inside the entity id")
        if c == "\\":
            c = next(chars, "")
            if c not in ('"', "\\"):
                raise InvalidRequestError('entity id escapes may only be \\" and \\\\')
        out.append(c)
    return "".join(out)


@dataclass(frozen=True, order=True)
class EntityRef:
    """A Cedar entity reference: ``{"type": "Agent", "id": "planner-7"}``."""

    type: str
    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not isinstance(self.id, str):
            raise InvalidRequestError("entity type and id must be strings")
        _check_type_name(self.type)
        check_label(self.id, "entity id", MAX_ID_LENGTH)

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        """The text form ``Type::"id"`` (what `str` gives): made once per reference, as
        a decision writes it for Cedar, the record's tags and the grant."""
        escaped = self.id.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.type}::"{escaped}"'

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    @classmethod
    def parse(cls, text: object) -> EntityRef:
        """Parse the text form ``Type::"id"`` exactly as `__str__` writes it."""
        if not isinstance(text, str) or len(text) > _MAX_ENTITY_TEXT:
            raise InvalidRequestError("entity reference must be a string of bounded length")
        type_name, sep, quoted = text.partition('::"')
        if not sep or not quoted.endswith('"') or len(quoted) < 2:
            raise InvalidRequestError('entity reference must look like Type::"id"')
        return cls(type_name, _unescape_id(quoted[:-1]))

    @classmethod
    def from_json(cls, value: object) -> EntityRef:
        """Parse Cedar's JSON form: an object with exactly ``type`` and ``id`` strings."""
        if not isinstance(value, Mapping) or set(value) != {"type", "id"}:
            raise InvalidRequestError('entity reference must be {"type": ..., "id": ...}')
        return cls(value["type"], value["id"])

    @classmethod
    def from_wire(cls, value: object) -> EntityRef:
        """Either form: a JSON object or the ``Type::"id"`` text the CLI accepts."""
        return cls.parse(value) if isinstance(value, str) else cls.from_json(value)


class ExecutionState(StrEnum):
    """Where an execution is in its lifecycle (DESIGN.md §2)."""

    REQUESTED = "requested"
    ACTIVE = "active"
    COMPLETED = "completed"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self not in (ExecutionState.REQUESTED, ExecutionState.ACTIVE)


class Outcome(StrEnum):
    """How a completed execution ended, as its enforcement point reports it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Lease:
    """How long an execution may run without checking in (see the module docstring)."""

    ttl_ms: int
    issued_at_ms: int
    expires_at_ms: int
    renew_by_ms: int

    def is_live(self, now_ms: int) -> bool:
        return now_ms < self.expires_at_ms

    def remaining_ms(self, now_ms: int) -> int:
        return max(0, self.expires_at_ms - now_ms)


@dataclass(frozen=True)
class Lineage:
    """Where an execution sits in its tree; see `lictor.core.lineage`."""

    parent_id: str | None
    root_id: str
    depth: int
    delegation: tuple[EntityRef, ...]


@dataclass(frozen=True, kw_only=True)
class Execution:
    """One governed unit of work; built by `lease.request`, moved by `lease`'s transitions.

    ``context`` is the caller's JSON context; it takes no part in hashing and
    must not be mutated. ``policy_version`` is None until a decision is made.
    """

    id: str
    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    context: Mapping[str, object] = field(hash=False)
    runtime_id: str | None
    parent_id: str | None
    root_id: str
    depth: int
    delegation: tuple[EntityRef, ...]
    state: ExecutionState
    policy_version: str | None
    lease: Lease | None
    created_at_ms: int
    ended_at_ms: int | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    reason: str | None = None
    version: int = 1

    @property
    def lineage(self) -> Lineage:
        return Lineage(self.parent_id, self.root_id, self.depth, self.delegation)


@dataclass(frozen=True)
class Transition:
    """One state change as the log records it; ``log_index`` is set once appended."""

    execution_id: str
    state: ExecutionState
    reason: str | None
    at_ms: int
    log_index: int | None = None

    @classmethod
    def of(cls, execution: Execution, at_ms: int) -> Transition:
        """The transition that produced ``execution`` (its current state and reason)."""
        return cls(execution.id, execution.state, execution.reason, at_ms)


def new_execution_id(now_ms: int, random10: bytes) -> str:
    """The execution id made at ``now_ms`` with 10 caller-supplied random bytes.

    Ids from later milliseconds sort after earlier ones, as text and as bytes.
    Within one millisecond they are in random order: this function keeps no
    state, so it neither counts nor waits for the clock.
    """
    check_time_ms(now_ms, "an execution id's time")
    if not isinstance(random10, bytes) or len(random10) != EXECUTION_ID_RANDOM_BYTES:
        raise InvalidRequestError(f"an execution id needs {EXECUTION_ID_RANDOM_BYTES} random bytes")
    value = (now_ms << 8 * EXECUTION_ID_RANDOM_BYTES) | int.from_bytes(random10, "big")
    # 26 digits of 5 bits spell 130 bits: two zero bits, then the 128; two digits
    # (10 bits) at a time, most significant first
    pairs = _CROCKFORD_PAIRS
    return EXECUTION_ID_PREFIX + "".join([pairs[(value >> s) & 1023] for s in _PAIR_SHIFTS])


_PAIR_SHIFTS = range(120, -1, -10)


def check_execution_id(value: object) -> str:
    """``value`` if it is an execution id in one of its two forms, each spelled canonically.

    The time-ordered form is any 128-bit value in Crockford base32 (first
    character 0-7); the random form made before it is 16 bytes in RFC 4648
    base32 whose two padding bits are zero.
    """
    if not isinstance(value, str) or not _EXECUTION_ID_SHAPE.fullmatch(value):
        raise InvalidRequestError("not an execution id (ex_ + 26 lowercase base32 characters)")
    if not (_TIME_ORDERED_ID.fullmatch(value) or _RANDOM_ID.fullmatch(value)):
        raise InvalidRequestError(
            "not an execution id: neither Crockford base32 of 128 bits (first character 0-7)"
            " nor RFC 4648 base32 of 16 bytes (last character one of a e i m q u y 4)"
        )
    return value


Frozen = TypeVar("Frozen")
_NEEDS_INIT: dict[type, bool] = {}  # by class: whether `changed` must call __init__


def changed(value: Frozen, **changes: Any) -> Frozen:
    """The frozen dataclass ``value`` with ``changes``: `dataclasses.replace` without
    calling ``__init__`` again (on a decision's path that costs as much as the rest of
    its bookkeeping) where ``__init__`` only assigns: no ``__post_init__``, no slots,
    and nothing cached from the fields (a copy would carry a stale value)."""
    kind = type(value)
    needs_init = _NEEDS_INIT.get(kind)
    if needs_init is None:  # asked once per class: hasattr raises inside when it is not
        caches = any(
            isinstance(member, cached_property)
            for base in kind.__mro__
            for member in vars(base).values()
        )
        needs_init = _NEEDS_INIT[kind] = (
            caches or hasattr(kind, "__post_init__") or hasattr(kind, "__slots__")
        )
    if needs_init:
        return dataclasses.replace(value, **changes)  # type: ignore[type-var]
    fields = value.__dataclass_fields__  # type: ignore[attr-defined]
    if not changes.keys() <= fields.keys():
        raise TypeError(f"{kind.__name__} has no field {sorted(changes - fields.keys())}")
    new = object.__new__(kind)
    new.__dict__.update(value.__dict__)
    new.__dict__.update(changes)
    return new
