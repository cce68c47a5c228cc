"""Policy sources, their versions, validation with positions, and compiled handles.

Pure: no I/O (`lictor.policydir` reads directories), no clock.

Guarantees:

- A `PolicySource` is a set of ``*.cedar`` files and one schema
  (``*.cedarschema`` or ``*.cedarschema.json``). Its `version` is the hex
  SHA-256 of `canonical_bytes`, the RFC 8785 JSON of ``{"policies": {name:
  text}, "schema": {"name": …, "text": …}}``: the order files were given in
  does not matter, and any change to a name or a byte of text changes it.
- Every policy has one user-facing id: its ``@id("…")`` annotation when it has
  one, otherwise ``<file>:<line>`` (``<file>:<line>:<column>`` when two
  policies start on one line). Ids are unique within a version; decisions name
  policies by these ids.
- `validate` reports every problem it can find as a `PolicyIssue` naming the
  file and, where one can be known, line and column: parse errors per policy,
  schema errors, policy type errors against the schema (merged with Lictor's
  ``context.lictor`` record, see `lictor.core.policy_schema`), duplicate ids,
  and templates (not supported: nothing in Lictor links them). An empty list
  means `compile_policies` will succeed.
- `compile_policies` returns pre-parsed cedarpy handles (the merged schema,
  the whole set and one slice per action, see `lictor.core.slicing`); keep one
  per version. It raises `InvalidRequestError` if `validate` finds anything.
- A compiled policy also knows, per action, which attributes of
  ``context.arguments`` its schema declares (the rest are dropped before
  evaluation: no valid policy can read them), and which policies carry
  ``@log_arguments("raw")`` (a decision they determine logs the arguments
  themselves instead of their keyed hash, see `lictor.service.arguments`).
- It also keeps the actions whose declared context is plain and the merged
  schema with ``context.lictor`` optional in them (`CallerContexts`): a request
  for one of these has the caller's part of its context checked against that
  schema and is evaluated without one, see `lictor.core.policy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import cedarpy
import rfc8785
from cedarpy import pst

from lictor.core import policy_text
from lictor.core.policy_schema import argument_names, merge_schema, plain_contexts, probe_errors
from lictor.core.slicing import ActionKey, Slices, action_ancestors, build_policy_set, build_slices
from lictor.core.types import EntityRef
from lictor.errors import InvalidRequestError

POLICY_SUFFIX = ".cedar"
SCHEMA_SUFFIXES = (".cedarschema", ".cedarschema.json")
MAX_NAME_LENGTH = 255
LOG_ARGUMENTS = "log_arguments"
_JSON_POSITION = re.compile(r"at line (\d+) column (\d+)")


def _check_name(name: object, suffixes: tuple[str, ...]) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise InvalidRequestError(f"file name must be 1..{MAX_NAME_LENGTH} characters")
    if "/" in name or "\\" in name or any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidRequestError(f"file name {name!r} has a path separator or control character")
    if not name.endswith(suffixes) or name in suffixes:
        raise InvalidRequestError(f"file name {name!r} must end with {' or '.join(suffixes)}")
    return name


@dataclass(frozen=True)
class PolicySource:
    """Policy files and one schema, exactly as written; ``policies`` is sorted by name."""

    policies: tuple[tuple[str, str], ...]
    schema_name: str
    schema_text: str

    def __post_init__(self) -> None:
        pairs = tuple(self.policies)
        shapes_ok = all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
        texts = [self.schema_text, *(p[1] for p in pairs)] if shapes_ok else []
        if not shapes_ok or not all(isinstance(text, str) for text in texts):
            raise InvalidRequestError("policies must be (file name, text) pairs of strings")
        names = [_check_name(name, (POLICY_SUFFIX,)) for name, _ in pairs]
        if len(set(names)) != len(names):
            raise InvalidRequestError("policy file names must be unique")
        _check_name(self.schema_name, SCHEMA_SUFFIXES)
        object.__setattr__(self, "policies", tuple(sorted(pairs)))

    @classmethod
    def of(cls, policies: Mapping[str, str], schema_name: str, schema_text: str) -> PolicySource:
        return cls(tuple(policies.items()), schema_name, schema_text)

    @property
    def schema_is_json(self) -> bool:
        return self.schema_name.endswith(".cedarschema.json")

    def canonical_bytes(self) -> bytes:
        schema = {"name": self.schema_name, "text": self.schema_text}
        return rfc8785.dumps({"policies": dict(self.policies), "schema": schema})

    @cached_property
    def version(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy source; ``line`` and ``column`` are 1-based when known."""

    file: str
    line: int | None
    column: int | None
    policy_id: str | None
    message: str

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.column) if p is not None)
        named = self.policy_id and not self.policy_id.startswith(f"{self.file}:")
        policy = f"policy {self.policy_id!r}: " if named else ""
        return f"{where}: {policy}{self.message}"

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PolicyInfo:
    """Where a policy came from: its user-facing id, file and first line, and effect."""

    id: str
    file: str
    line: int
    effect: str


@dataclass(frozen=True, eq=False)
class CallerContexts:
    """What checks a caller's part of the context on its own: the merged schema with
    ``context.lictor`` optional, the actions whose context is plain
    (`lictor.core.policy_schema.plain_contexts`), and the requests found valid or
    not, by principal, action, resource and the caller's context as JSON text (kept
    up to `CallerContexts.KEPT` at a time)."""

    KEPT = 4096
    KEPT_TEXT = 1024  # a longer context is checked at every request

    schema: cedarpy.Schema
    actions: frozenset[ActionKey]
    checked: dict[tuple[str, ...], bool] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class CompiledPolicy:
    """Pre-parsed handles for one policy version; immutable and safe to share."""

    version: str
    schema_version: str
    schema: cedarpy.Schema
    policies: tuple[PolicyInfo, ...]
    policy_set: cedarpy.PolicySet
    slices: Slices
    arguments: Mapping[ActionKey, frozenset[str] | None] = dataclasses.field(default_factory=dict)
    raw_arguments: frozenset[str] = frozenset()
    callers: CallerContexts | None = None

    def slice_for(self, action: EntityRef | ActionKey) -> cedarpy.PolicySet:
        key = (action.type, action.id) if isinstance(action, EntityRef) else action
        return self.slices.for_action(key)

    def reads_time(self, action: EntityRef | ActionKey) -> bool:
        """Whether a policy that applies to ``action`` could read ``context.lictor.time``."""
        key = (action.type, action.id) if isinstance(action, EntityRef) else action
        return self.slices.reads_time(key)


@dataclass
class _Parsed:
    """One successfully parsed policy on its way to a `CompiledPolicy`."""

    info: PolicyInfo
    template: pst.Template
    text: str


@dataclass
class _Analysis:
    issues: list[PolicyIssue] = dataclasses.field(default_factory=list)
    parsed: list[_Parsed] = dataclasses.field(default_factory=list)
    schema: cedarpy.Schema | None = None
    arguments: dict[ActionKey, frozenset[str] | None] = dataclasses.field(default_factory=dict)


def validate(source: PolicySource) -> list[PolicyIssue]:
    """Every problem found in ``source``; empty when it compiles."""
    return _analyze(source).issues


def compile_policies(source: PolicySource) -> CompiledPolicy:
    """Pre-parsed handles for ``source``; `InvalidRequestError` naming the issues if invalid."""
    analysis = _analyze(source)
    if analysis.issues or analysis.schema is None:
        shown = "; ".join(str(issue) for issue in analysis.issues[:5])
        more = len(analysis.issues) - 5
        raise InvalidRequestError(
            f"invalid policy set: {shown}" + (f" (+{more} more)" if more > 0 else "")
        )
    templates = {p.info.id: p.template for p in analysis.parsed}
    return CompiledPolicy(
        version=source.version,
        schema_version=schema_version(source),
        schema=analysis.schema,
        policies=tuple(p.info for p in analysis.parsed),
        policy_set=build_policy_set(templates),
        slices=build_slices(templates, action_ancestors(analysis.schema)),
        arguments=analysis.arguments,
        raw_arguments=frozenset(
            pid for pid, t in templates.items() if t.annotations.get(LOG_ARGUMENTS) == "raw"
        ),
        callers=_callers(analysis.schema),
    )


def _callers(schema: cedarpy.Schema | None) -> CallerContexts | None:
    """None when no action's context is plain, or the rendering cannot be read: every
    request then goes through the merged schema."""
    if schema is None:
        return None
    try:
        actions, optional = plain_contexts(schema)
    except ValueError:
        return None
    return CallerContexts(optional, actions) if actions else None


def schema_version(source: PolicySource) -> str:
    """Hex SHA-256 naming the schema alone; entity sets are compiled per schema version."""
    schema = {"name": source.schema_name, "text": source.schema_text}
    return hashlib.sha256(rfc8785.dumps({"schema": schema})).hexdigest()


def _analyze(source: PolicySource) -> _Analysis:
    analysis = _Analysis()
    analysis.schema = _load_schema(source, analysis.issues)
    for name, text in source.policies:
        analysis.parsed.extend(_parse_file(name, text, analysis.issues))
    _check_unique_ids(analysis)
    if analysis.schema is not None and analysis.parsed:
        analysis.issues.extend(_type_issues(analysis.parsed, analysis.schema))
    if analysis.schema is not None:
        try:
            analysis.arguments = argument_names(analysis.schema)
        except ValueError as e:
            message = f"cannot read the attributes of context.arguments: {e}"
            analysis.issues.append(PolicyIssue(source.schema_name, None, None, None, message))
    return analysis


# --- schema --------------------------------------------------------------------------------


def _load_schema(source: PolicySource, issues: list[PolicyIssue]) -> cedarpy.Schema | None:
    parse = cedarpy.Schema.from_json_str if source.schema_is_json else cedarpy.Schema.from_str
    try:
        user = parse(source.schema_text)
    except ValueError as e:
        issues.append(_schema_parse_issue(source, str(e)))
        return None
    try:
        merged, actions = merge_schema(user)
    except ValueError as e:
        issues.append(PolicyIssue(source.schema_name, None, None, None, f"context.lictor: {e}"))
        return None
    problems = probe_errors(merged) if actions else []
    for problem in problems:
        message = f"context.lictor must have Lictor's record type: {problem}"
        issues.append(PolicyIssue(source.schema_name, None, None, None, message))
    return None if problems else merged


def _schema_error(text: str) -> str | None:
    try:
        cedarpy.Schema.from_str(text)
    except ValueError as e:
        return str(e)
    return None


def _schema_parse_issue(source: PolicySource, message: str) -> PolicyIssue:
    text, name = source.schema_text, source.schema_name
    position = _JSON_POSITION.search(message) if source.schema_is_json else None
    if position:
        return PolicyIssue(name, int(position.group(1)), int(position.group(2)), None, message)
    offset = (
        None if source.schema_is_json else policy_text.error_offset(text, message, _schema_error)
    )
    if offset is None:
        offset = policy_text.name_offset(text, message)
    if offset is None:
        return PolicyIssue(name, None, None, None, message)
    line, column = policy_text.line_col(text, offset)
    return PolicyIssue(name, line, column, None, message)


# --- policies ------------------------------------------------------------------------------


def _policy_error(text: str) -> str | None:
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as e:
        return str(e)
    return None


def _parse_file(name: str, text: str, issues: list[PolicyIssue]) -> list[_Parsed]:
    chunks = policy_text.split_policies(text)
    starts = [policy_text.line_col(text, chunk.start) for chunk in chunks]
    lines = [line for line, _ in starts]
    parsed: list[_Parsed] = []
    for chunk, (line, column) in zip(chunks, starts, strict=True):
        default_id = f"{name}:{line}" if lines.count(line) == 1 else f"{name}:{line}:{column}"
        template = _parse_chunk(name, text, chunk, issues)
        if template is not None:
            parsed.append(_identify(template, default_id, name, line, chunk.text))
    return parsed


def _parse_chunk(
    name: str, text: str, chunk: policy_text.Chunk, issues: list[PolicyIssue]
) -> pst.Template | None:
    line, _ = policy_text.line_col(text, chunk.start)
    try:
        node = cedarpy.PolicySet.from_str(chunk.text).to_pst()
    except ValueError as e:
        issues.append(_policy_parse_issue(name, text, chunk, str(e)))
        return None
    if node.templates:
        message = "templates (policies with ?principal or ?resource) are not supported"
        issues.append(PolicyIssue(name, line, None, None, message))
        return None
    if len(node.static_policies) != 1:
        issues.append(PolicyIssue(name, line, None, None, "expected exactly one policy here"))
        return None
    return next(iter(node.static_policies.values()))


def _policy_parse_issue(
    name: str, text: str, chunk: policy_text.Chunk, message: str
) -> PolicyIssue:
    offset = policy_text.error_offset(chunk.text, message, _policy_error, closer=";")
    if offset is None:
        offset = policy_text.name_offset(chunk.text[chunk.start - chunk.offset :], message)
        offset = None if offset is None else offset + chunk.start - chunk.offset
    if offset is None:
        line, _ = policy_text.line_col(text, chunk.start)
        hint = " (missing `;`?)" if message == "unexpected end of input" else ""
        return PolicyIssue(name, line, None, None, f"{message}{hint}, in the policy starting here")
    line, column = policy_text.line_col(text, chunk.offset + offset)
    return PolicyIssue(name, line, column, None, message)


def _identify(template: pst.Template, default_id: str, name: str, line: int, text: str) -> _Parsed:
    policy_id = template.annotations.get("id", default_id)
    info = PolicyInfo(policy_id, name, line, template.effect)
    return _Parsed(info, dataclasses.replace(template, id=policy_id), text)


def _check_unique_ids(analysis: _Analysis) -> None:
    seen: dict[str, PolicyInfo] = {}
    unique: list[_Parsed] = []
    for parsed in analysis.parsed:
        info = parsed.info
        first = seen.setdefault(info.id, info)
        if not info.id:
            message = "@id must not be empty"
        elif first is not info:
            message = f"policy id {info.id!r} is already used at {first.file}:{first.line}"
        else:
            unique.append(parsed)
            continue
        analysis.issues.append(PolicyIssue(info.file, info.line, None, info.id or None, message))
    analysis.parsed = unique


def _type_issues(parsed: list[_Parsed], schema: cedarpy.Schema) -> list[PolicyIssue]:
    result = cedarpy.validate_policies("\n".join(p.text for p in parsed), schema)
    issues = []
    for error in result.errors:
        index = error.policy_id.removeprefix("policy")
        if not index.isdigit() or int(index) >= len(parsed):
            issues.append(PolicyIssue("", None, None, None, error.error))
            continue
        info = parsed[int(index)].info
        message = error.error.removeprefix(f"for policy `{error.policy_id}`, ")
        issues.append(PolicyIssue(info.file, info.line, None, info.id, message))
    return sorted(set(issues), key=lambda i: (i.file, i.line or 0, i.message))
