"""What Lictor adds to every request: the ``context.lictor`` record and its schema.

Pure: no I/O, no clock (the time is passed in).

Every request Lictor evaluates carries, beside the caller's own context
attributes, one attribute ``lictor`` holding this record (Cedar schema syntax;
`LICTOR_CONTEXT_SCHEMA` and `LICTOR_CONTEXT_SCHEMA_JSON` are the fragment in
both schema formats)::

    namespace Lictor {
      type Context = { runtime: Runtime, lineage: Lineage, time: Time };
      type Runtime = {
        id: String,           // the runtime (enforcement point) running the execution
        region: String,       // e.g. "eu-west-1"
        cluster: String,      // e.g. "prod-a"
        attestation: Attestation,
      };
      type Attestation = {
        state: String,        // "verified" | "unverified" | "failed" | "none"
        digests: Set<String>, // attested software, "sha256:<hex>"
      };
      type Lineage = {
        depth: Long,               // 0 for a root execution
        root_principal: EntityRef, // who started the tree
        parent_id?: String,        // absent for a root execution
        parent_action?: String,    // the parent's action id, absent for a root
      };
      type EntityRef = { "type": String, "id": String };
      type Time = { epoch_ms: Long, now: __cedar::datetime };
    }

An execution with no runtime gets `NO_RUNTIME`: empty strings and attestation
state ``"none"``, so a rule that requires ``"verified"`` fails closed.

A user's schema need not mention any of this. `merge_schema` adds
``lictor: Lictor::Context`` to the context of every action that does not
declare ``lictor`` itself (and the fragment, unless the schema already has
namespace ``Lictor``), so a policy set whose schema declares no context works
unchanged and policies may still read ``context.lictor.runtime.region``. A
schema that includes the fragment itself also validates with plain Cedar
tools. `probe_errors` then checks that every action's ``context.lictor`` has
exactly Lictor's shape, so requests cannot fail schema validation later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import TypeVar

import cedarpy
import orjson

from lictor.core.types import EntityRef, check_time_ms
from lictor.errors import InvalidRequestError

LICTOR_CONTEXT_SCHEMA = """\
namespace Lictor {
  type Context = { runtime: Runtime, lineage: Lineage, time: Time };
  type Runtime = { id: String, region: String, cluster: String, attestation: Attestation };
  type Attestation = { state: String, digests: Set<String> };
  type Lineage = {
    depth: Long,
    root_principal: EntityRef,
    parent_id?: String,
    parent_action?: String,
  };
  type EntityRef = { "type": String, "id": String };
  type Time = { epoch_ms: Long, now: __cedar::datetime };
}
"""

LICTOR_CONTEXT_SCHEMA_JSON = """\
{"Lictor": {"entityTypes": {}, "actions": {}, "commonTypes": {
  "Context": {"type": "Record", "attributes": {
    "runtime": {"type": "Runtime"},
    "lineage": {"type": "Lineage"},
    "time": {"type": "Time"}}},
  "Runtime": {"type": "Record", "attributes": {
    "id": {"type": "String"},
    "region": {"type": "String"},
    "cluster": {"type": "String"},
    "attestation": {"type": "Attestation"}}},
  "Attestation": {"type": "Record", "attributes": {
    "state": {"type": "String"},
    "digests": {"type": "Set", "element": {"type": "String"}}}},
  "Lineage": {"type": "Record", "attributes": {
    "depth": {"type": "Long"},
    "root_principal": {"type": "EntityRef"},
    "parent_id": {"type": "String", "required": false},
    "parent_action": {"type": "String", "required": false}}},
  "EntityRef": {"type": "Record", "attributes": {
    "type": {"type": "String"},
    "id": {"type": "String"}}},
  "Time": {"type": "Record", "attributes": {
    "epoch_ms": {"type": "Long"},
    "now": {"type": "Extension", "name": "datetime"}}}
}}}
"""

CONTEXT_KEY = "lictor"
CONTEXT_FIELD = "lictor: Lictor::Context"

ATTESTATION_STATES = ("verified", "unverified", "failed", "none")
"""The attestation states Lictor reports; only ``"verified"`` means checked and matching."""


@dataclass(frozen=True)
class RuntimeFacts:
    """What policies see of the runtime running the execution."""

    id: str
    region: str
    cluster: str
    attestation_state: str = "unverified"
    digests: tuple[str, ...] = ()


NO_RUNTIME = RuntimeFacts(id="", region="", cluster="", attestation_state="none")
Facts = TypeVar("Facts")


@dataclass(frozen=True)
class LineageFacts:
    """What policies see of the execution's place in its tree."""

    depth: int
    root_principal: EntityRef
    parent_id: str | None = None
    parent_action: str | None = None

    @classmethod
    def root(cls, principal: EntityRef) -> LineageFacts:
        return cls(depth=0, root_principal=principal)


def lictor_context(runtime: RuntimeFacts, lineage: LineageFacts, now_ms: int) -> dict[str, object]:
    """The ``context.lictor`` record, as Cedar JSON; `InvalidRequestError` on bad facts."""
    return {
        "runtime": _runtime_record(runtime),
        "lineage": _lineage_record(lineage),
        "time": {"epoch_ms": check_time_ms(now_ms, "now_ms"), "now": _datetime(now_ms)},
    }


LICTOR_PARTS = frozenset({"runtime", "lineage", "time"})


def lictor_context_json(
    runtime: RuntimeFacts,
    lineage: LineageFacts,
    now_ms: int,
    *,
    parts: frozenset[str] | None = None,
) -> str:
    """`lictor_context`'s record as JSON text. Decisions come many to a runtime and to a
    tree: the runtime's and the lineage's parts are written once for each distinct set
    of facts (checked as `lictor_context` checks them), the time at each call.

    ``parts``: for Cedar asked without the schema, only these parts of the record
    (of `LICTOR_PARTS`; none: ``""``, no record at all), and ``now`` as Cedar's
    ``{"__extn": ...}`` escape (the schema otherwise reads the text as a
    ``datetime``). Every fact is checked either way."""
    now_ms = check_time_ms(now_ms, "now_ms")
    runtime_part = _written(_runtime_json, _runtime_text, runtime)
    lineage_part = _written(_lineage_json, _lineage_text, lineage)
    now = f'"{_datetime(now_ms)}"'
    if parts is None:
        time_part = f'{{"epoch_ms":{now_ms},"now":{now}}}'
        return f'{{"runtime":{runtime_part},"lineage":{lineage_part},"time":{time_part}}}'
    written = []
    if "runtime" in parts:
        written.append(f'"runtime":{runtime_part}')
    if "lineage" in parts:
        written.append(f'"lineage":{lineage_part}')
    if "time" in parts:
        escaped = f'{{"__extn":{{"fn":"datetime","arg":{now}}}}}'
        written.append(f'"time":{{"epoch_ms":{now_ms},"now":{escaped}}}')
    return f"{{{','.join(written)}}}" if written else ""


def _written(cached: Callable[[Facts], str], write: Callable[[Facts], str], facts: Facts) -> str:
    try:
        return cached(facts)
    except TypeError:  # facts that cannot be hashed (digests in a list): written afresh
        return write(facts)


def _runtime_text(runtime: RuntimeFacts) -> str:
    return _json_text(_runtime_record(runtime))


def _lineage_text(lineage: LineageFacts) -> str:
    return _json_text(_lineage_record(lineage))


def _json_text(record: dict[str, object]) -> str:
    try:
        return orjson.dumps(record).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, which json writes escaped
        return json.dumps(record)


_runtime_json = lru_cache(maxsize=256)(_runtime_text)  # a plane's runtimes
_lineage_json = lru_cache(maxsize=4096)(_lineage_text)  # the trees being decided in


def _strings(values: Sequence[object], what: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise InvalidRequestError(f"{what} must be strings")
    return [str(v) for v in values]


def _runtime_record(runtime: RuntimeFacts) -> dict[str, object]:
    rid, region, cluster, state = _strings(
        (runtime.id, runtime.region, runtime.cluster, runtime.attestation_state), "runtime facts"
    )
    digests = sorted(set(_strings(runtime.digests, "attestation digests")))
    attestation = {"state": state, "digests": digests}
    return {"id": rid, "region": region, "cluster": cluster, "attestation": attestation}


def _lineage_record(lineage: LineageFacts) -> dict[str, object]:
    if type(lineage.depth) is not int or lineage.depth < 0:
        raise InvalidRequestError("lineage depth must be a non-negative integer")
    if not isinstance(lineage.root_principal, EntityRef):
        raise InvalidRequestError("lineage root_principal must be an EntityRef")
    record: dict[str, object] = {
        "depth": lineage.depth,
        "root_principal": lineage.root_principal.to_json(),
    }
    for key in ("parent_id", "parent_action"):
        value = getattr(lineage, key)
        if value is not None:
            record[key] = _strings((value,), f"lineage {key}")[0]
    return record


def _datetime(now_ms: int) -> str:
    """``now`` as its RFC 3339 text: every decision passes the schema, which declares
    ``now`` a ``datetime``, so Cedar reads the text as one (without the schema it would
    need the ``{"__extn": {"fn": "datetime", ...}}`` form, which Cedar converts a
    fifth slower)."""
    return f"{_second(now_ms // 1000)}.{now_ms % 1000:03d}Z"


@lru_cache(maxsize=4)
def _second(epoch_s: int) -> str:
    """``epoch_s`` as RFC 3339 UTC to the second (decisions come many to a second)."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=epoch_s)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )


# --- merging the record into a user's schema -------------------------------------------
#
# cedarpy renders any schema (either format) to normalized Cedar syntax: one
# member per line, two-space indents, every action with `appliesTo` listing
# `context:` last. The merge edits that rendering line by line and re-parses it;
# anything it does not recognise is an error, never a silent skip.

_NAMESPACE = re.compile(r"namespace (\S+) \{$")
_ACTION = re.compile(r'( *)action "(?:[^"\\]|\\.)*"(?: in \[.*\])? appliesTo \{$')
_TYPE = re.compile(r"( *)type (\w+) = (.*)$")
_LICTOR_MEMBER = re.compile(r'"?lictor"?\??: ')
_EMPTY_RECORD = re.compile(r"\{\s*\}")

_PROBE = """permit(principal, action, resource) when {
  context.lictor.runtime.id == "" && context.lictor.runtime.region == "" &&
  context.lictor.runtime.cluster == "" &&
  context.lictor.runtime.attestation.state == "" &&
  context.lictor.runtime.attestation.digests.contains("") &&
  context.lictor.lineage.depth == 0 &&
  context.lictor.lineage.root_principal.type == "" &&
  context.lictor.lineage.root_principal.id == "" &&
  (context.lictor.lineage has parent_id && context.lictor.lineage.parent_id == "") &&
  (context.lictor.lineage has parent_action && context.lictor.lineage.parent_action == "") &&
  context.lictor.time.epoch_ms == 0 &&
  context.lictor.time.now == datetime("1970-01-01")
};"""

Edits = dict[int, list[str]]
TypeKey = tuple[str, str]


def merge_schema(user: cedarpy.Schema) -> tuple[cedarpy.Schema, int]:
    """``user`` with ``context.lictor`` in every action, and how many actions have a context.

    Raises `ValueError` when the rendering cannot be merged.
    """
    lines = str(user).splitlines()
    try:
        edits, refs, actions = _action_edits(lines)
        edits.update(_type_edits(lines, refs))
    except IndexError:
        raise ValueError("cannot read the schema's rendering") from None
    merged = [new for i, line in enumerate(lines) for new in edits.get(i, [line])]
    declared = _lictor_namespace(lines)
    if declared is None:
        merged.append(LICTOR_CONTEXT_SCHEMA)
    elif declared != _fragment_block():
        raise ValueError(
            "namespace Lictor is reserved for Lictor's context record; copy it exactly"
        )
    return cedarpy.Schema.from_str("\n".join(merged)), actions


def probe_errors(schema: cedarpy.Schema) -> list[str]:
    """Why some action's ``context.lictor`` would not accept `lictor_context`'s record."""
    errors = cedarpy.validate_policies(_PROBE, schema).errors
    return sorted({e.error.removeprefix("for policy `policy0`, ") for e in errors})


# --- the declared attributes of context.arguments -------------------------------------

_ACTION_NAME = re.compile(r'( *)action "((?:[^"\\]|\\.)*)"(?: in \[.*\])? appliesTo \{$')
_MEMBER = re.compile(r'(?:"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*))\??: (.*?),?$')
ARGUMENTS = "arguments"
_MAX_ALIASES = 16


def argument_names(schema: cedarpy.Schema) -> dict[tuple[str, str], frozenset[str] | None]:
    """For each action whose context declares ``arguments``, the attributes it declares.

    None when ``arguments`` is not a record (it is then passed on whole, for
    Cedar to type-check); an action missing here declares no ``arguments``.
    Keys are ``(action type, action id)``, e.g. ``("Action", "call_tool")``.
    """
    lines = str(schema).splitlines()
    declared = _type_declarations(lines)
    found: dict[tuple[str, str], frozenset[str] | None] = {}
    for key, context, namespace in _action_contexts(lines):
        record = _record(lines, context, namespace, declared)
        value = None if record is None else _members(lines, *record).get(ARGUMENTS)
        arguments = _record(lines, value, namespace, declared) if value else None
        if value is not None:
            found[key] = None if arguments is None else frozenset(_members(lines, *arguments))
    return found


def _action_contexts(lines: list[str]) -> Iterator[tuple[tuple[str, str], Member | None, str]]:
    """Each action of a rendered schema: its key, its ``context`` member (None when it
    declares none) and the namespace it is declared in."""
    namespace = ""
    for i, line in enumerate(lines):
        if match := _NAMESPACE.match(line):
            namespace = match.group(1)
        elif line == "}":
            namespace = ""
        elif match := _ACTION_NAME.match(line):
            key = (f"{namespace}::Action" if namespace else "Action", _unquote(match.group(2)))
            yield key, _members(lines, i + 1, match.group(1) + "  ").get("context"), namespace


_PLAIN = re.compile(r"(?:__cedar::)?(?:String|Long|Bool)")
_PLAIN_SET = re.compile(r"Set<(?:__cedar::)?(?:String|Long|Bool)>")


def plain_contexts(schema: cedarpy.Schema) -> tuple[frozenset[tuple[str, str]], cedarpy.Schema]:
    """The actions of a merged ``schema`` whose context, but for ``context.lictor``,
    holds only text, integers, booleans, sets of those and records of those (at any
    depth), with no attribute named ``__...``; and ``schema`` with ``lictor`` optional
    in those contexts, to check a caller's part of a context against.

    JSON reads the same into such a context with the schema or without it: no text
    becomes an extension value or an entity, and no object an escape. So a caller's
    context for one of these actions, once the schema accepts it, is evaluated the
    same without the schema (`lictor.core.policy`); ``context.lictor`` has the shape
    `probe_errors` checked. Anything else, or anything this reading is unsure of, is
    left out. Raises `ValueError` on an unreadable rendering.
    """
    lines = str(schema).splitlines()
    declared = _type_declarations(lines)
    entities = _entity_names(lines)
    types = _Types(declared, entities, entities | {name for _, name in declared})
    found: set[tuple[str, str]] = set()
    edits: Edits = {}
    for key, context, namespace in _action_contexts(lines):
        record = _record_in(lines, context, namespace, types.declared)
        if record is None:
            continue
        members = _members(lines, record[0], record[1])
        lictor = members.pop(CONTEXT_KEY, None)
        if lictor is not None and _plain_members(lines, members, record[2], types, 0):
            found.add(key)
            edits[lictor[0]] = [_OPTIONAL.sub(r"\1lictor?: ", lines[lictor[0]], count=1)]
    optional = "\n".join(new for i, line in enumerate(lines) for new in edits.get(i, [line]))
    return frozenset(found), cedarpy.Schema.from_str(optional)


_OPTIONAL = re.compile(r'^( *)"?lictor"?\??: ')


@dataclass(frozen=True)
class _Types:
    declared: dict[TypeKey, int]  # common types: where each is declared
    entities: frozenset[str]  # entity types' names, without their namespaces
    names: frozenset[str]  # both kinds', without their namespaces


_ENTITY = re.compile(r" *entity (\S+?)[ ;{]")


def _entity_names(lines: list[str]) -> frozenset[str]:
    return frozenset(m.group(1) for line in lines if (m := _ENTITY.match(line)))


def _plain_members(
    lines: list[str], members: dict[str, Member], namespace: str, types: _Types, depth: int
) -> bool:
    for name, (i, text) in members.items():
        if name.startswith("__") or depth > _MAX_ALIASES:
            return False
        text = text.rstrip(",")
        if _PLAIN.fullmatch(text) or _PLAIN_SET.fullmatch(text):
            if text.removeprefix("Set<").removesuffix(">") in types.names:
                return False  # a primitive's name that a declared type shares
            continue
        if text.rpartition("::")[2] in types.entities:
            return False  # an entity type (or a name an entity type shares): never plain
        record = _record_in(lines, (i, text), namespace, types.declared)
        if record is None:
            return False
        inner = _members(lines, record[0], record[1])
        if not _plain_members(lines, inner, record[2], types, depth + 1):
            return False
    return True


Member = tuple[int, str]  # the line a member is declared on, and its type text


def _members(lines: list[str], start: int, indent: str) -> dict[str, Member]:
    """The members of the record whose first member line is ``start``, at ``indent``."""
    members: dict[str, Member] = {}
    i = start
    while i < len(lines) and lines[i].startswith(indent):
        line = lines[i][len(indent) :]
        i += 1
        if line.startswith((" ", "@", "}")):  # inside a member, an annotation, a closing
            continue
        if (match := _MEMBER.match(line)) is None:
            raise ValueError(f"cannot read the record member {line.strip()!r}")
        name = _unquote(match.group(1)) if match.group(1) is not None else match.group(2)
        members[name] = (i - 1, match.group(3))
    return members


def _record(
    lines: list[str], member: Member | None, namespace: str, declared: dict[TypeKey, int]
) -> tuple[int, str] | None:
    """Where the record a member's type names starts (first member line, indent),
    following type aliases; None if it is not a record."""
    found = _record_in(lines, member, namespace, declared)
    return None if found is None else found[:2]


def _record_in(
    lines: list[str], member: Member | None, namespace: str, declared: dict[TypeKey, int]
) -> tuple[int, str, str] | None:
    """`_record`, and the namespace the record is declared in (where its members'
    type names are looked up)."""
    if member is None:
        return None
    i, text = member
    indent = " " * (len(lines[i]) - len(lines[i].lstrip(" "))) + "  "
    for _ in range(_MAX_ALIASES):
        text = text.rstrip(";,")
        if text == "{":
            return i + 1, indent, namespace
        if _EMPTY_RECORD.fullmatch(text):
            return len(lines), indent, namespace
        try:
            key = _resolve(namespace, text, declared)
        except ValueError:
            return None  # not a declared type: a primitive, a set, an entity
        i, namespace = declared[key], key[0]
        found = _TYPE.match(lines[i])
        if found is None:
            raise ValueError(f"cannot read the declaration of type {text}")
        indent, text = found.group(1) + "  ", found.group(3)
    raise ValueError(f"type {text} is an alias of an alias ... {_MAX_ALIASES} deep")


_ESCAPE = re.compile(r"\\(u\{[0-9a-fA-F]{1,6}\}|.)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0"}


def _unquote(text: str) -> str:
    """A quoted name as Cedar renders it, decoded (``\\n``, ``\\u{200b}``, ``\\"``...)."""

    def one(escape: re.Match[str]) -> str:
        code = escape.group(1)
        if code.startswith("u{"):
            return chr(int(code[2:-1], 16))
        return _ESCAPES.get(code, code)

    return _ESCAPE.sub(one, text)


def _lictor_namespace(lines: list[str]) -> tuple[str, ...] | None:
    """The normalized ``namespace Lictor`` block of a rendered schema, if it has one."""
    if "namespace Lictor {" not in lines:
        return None
    start = lines.index("namespace Lictor {")
    end = lines.index("}", start)
    return tuple(re.sub(r"__cedar::(String|Long|Bool)\b", r"\1", x) for x in lines[start:end])


@cache
def _fragment_block() -> tuple[str, ...] | None:
    return _lictor_namespace(str(cedarpy.Schema.from_str(LICTOR_CONTEXT_SCHEMA)).splitlines())


def _action_edits(lines: list[str]) -> tuple[Edits, set[TypeKey], int]:
    edits: Edits = {}
    refs: set[TypeKey] = set()
    namespace, actions = "", 0
    for i, line in enumerate(lines):
        if found := _NAMESPACE.match(line):
            namespace = found.group(1)
        elif line == "}":
            namespace = ""
        elif found := _ACTION.match(line):
            actions += 1
            ref = _context_edit(lines, i + 1, found.group(1) + "  ", edits)
            if ref is not None:
                refs.add((namespace, ref))
    return edits, refs, actions


def _context_edit(lines: list[str], i: int, indent: str, edits: Edits) -> str | None:
    """Edit the context member of the action block starting at line ``i``; a type name if any."""
    while not lines[i].startswith(indent + "context: "):
        if not lines[i].startswith(indent):
            raise ValueError(f"cannot find the context of the action before line {i + 1}")
        i += 1
    value = lines[i][len(indent) + len("context: ") :].rstrip(",")
    if value == "{" or _EMPTY_RECORD.fullmatch(value):
        _record_edit(lines, i, indent, edits, opener=f"{indent}context: ")
        return None
    return value


def _record_edit(lines: list[str], i: int, indent: str, edits: Edits, *, opener: str) -> None:
    """Add the ``lictor`` member to the record opening at line ``i`` unless it has one."""
    rest = lines[i][len(opener) :]
    if empty := _EMPTY_RECORD.match(rest):
        edits[i] = [f"{opener}{{ {CONTEXT_FIELD} }}{rest[empty.end() :]}"]
        return
    j = i + 1
    while not lines[j].startswith(indent + "}"):
        if lines[j].startswith(indent + "  ") and _LICTOR_MEMBER.match(lines[j][len(indent) + 2 :]):
            return
        j += 1
    edits[i] = [lines[i], f"{indent}  {CONTEXT_FIELD},"]


def _type_edits(lines: list[str], refs: set[TypeKey]) -> Edits:
    declared = _type_declarations(lines)
    edits: Edits = {}
    for namespace, name in sorted(refs):
        key = _resolve(namespace, name, declared)
        i = declared[key]
        found = _TYPE.match(lines[i])
        if found is None or not found.group(3).startswith("{"):
            raise ValueError(f"context type {name} is an alias; declare `{CONTEXT_FIELD}` in it")
        _record_edit(lines, i, found.group(1), edits, opener=f"{found.group(1)}type {name} = ")
    return edits


def _type_declarations(lines: list[str]) -> dict[TypeKey, int]:
    declared: dict[TypeKey, int] = {}
    namespace = ""
    for i, line in enumerate(lines):
        if found := _NAMESPACE.match(line):
            namespace = found.group(1)
        elif line == "}":
            namespace = ""
        elif found := _TYPE.match(line):
            declared[(namespace, found.group(2))] = i
    return declared


def _resolve(namespace: str, name: str, declared: dict[TypeKey, int]) -> TypeKey:
    prefix, _, base = name.rpartition("::")
    candidates = [(prefix, base)] if prefix else [(namespace, name), ("", name)]
    for key in candidates:
        if key in declared:
            return key
    raise ValueError(f"cannot find the declaration of context type {name}")
