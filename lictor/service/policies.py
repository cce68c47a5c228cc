"""The policy store: versions pushed, one active, entities versioned beside them.

A pushed policy set is stored under its version (the SHA-256 of its canonical
content) and logged (``policy_pushed``); pushing the same content again is a
no-op. Activating a version is logged (``policy_activated``) and re-verifies
every active execution in the same batch (see `lictor.service.executions`).
Entities are one versioned document (``entities_put``, logged). Compiled
handles are cached per version, so decisions never re-parse, and the active
version and current entity version are cached in memory: this process is the
data directory's only writer, and every change goes through `invalidate`.
A decision made on a stale cache is caught when it commits (the plan reads
the active version from the batch's view) and decided again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lictor.core.policy import (
    CompiledEntities,
    CompiledPolicy,
    EntityRef,
    PolicySource,
    compile_entities,
    compile_policies,
    could_allow,
    entities_version,
    validate,
)
from lictor.errors import InvalidRequestError, LictorError, NotFoundError
from lictor.log.entry import canonical_entry
from lictor.sequencer import Plan
from lictor.service.log import AuditLog
from lictor.store.base import RecordWrite
from lictor.store.view import StateView

POLICY = "policy"
SETTING = "setting"
ACTIVE = "active_policy"
ENTITIES = "entities"
ENTITIES_VERSION = "entities_version"
CURRENT = "current"
CACHE_SIZE = 16


@dataclass(frozen=True)
class PolicyVersion:
    """A stored policy version and when it was pushed."""

    version: str
    source: PolicySource
    pushed_at_ms: int

    def to_json(self, with_source: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"version": self.version, "pushed_at_ms": self.pushed_at_ms}
        if with_source:
            body["source"] = source_json(self.source)
        return body


def source_json(source: PolicySource) -> dict[str, Any]:
    return {
        "policies": dict(source.policies),
        "schema": {"name": source.schema_name, "text": source.schema_text},
    }


def source_from_json(value: Any) -> PolicySource:
    """A `PolicySource` from its JSON form; `InvalidRequestError` if malformed."""
    try:
        policies, schema = value["policies"], value["schema"]
        return PolicySource.of(dict(policies), schema["name"], schema["text"])
    except (KeyError, TypeError, AttributeError) as e:
        raise InvalidRequestError(f"a policy source needs policies and a schema: {e}") from e


class Policies:
    """Use cases for policy versions and entities."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._compiled: dict[str, CompiledPolicy] = {}
        self._entities: dict[tuple[str, str], CompiledEntities] = {}
        self._lock = threading.Lock()
        self._active: tuple[str | None] | None = None
        self._active_doc: tuple[bytes, str] | None = None  # `_version_in`'s last
        self._current_entities: str | None = None

    def invalidate(self) -> None:
        """Forget the cached active version and entity version (after a change)."""
        with self._lock:
            self._active = None
            self._current_entities = None

    def push(self, source: PolicySource) -> tuple[PolicyVersion, bool]:
        """Store a validated version; returns it and whether it is new."""
        issues = validate(source)
        if issues:
            shown = "; ".join(str(i) for i in issues[:10])
            raise InvalidRequestError(f"policy set does not validate: {shown}")
        pushed = PolicyVersion(source.version, source, self.log.now_ms())
        doc = canonical_entry({"source": source_json(source), "pushed_at_ms": pushed.pushed_at_ms})
        entry = self.log.prepare_event("policy_pushed", {"version": pushed.version}, {})

        def plan(view: StateView, first_index: int) -> Plan:
            existing = view.get(POLICY, pushed.version)
            if existing is not None:
                return Plan([], [], lambda head: (self._from_record(existing.doc), False))
            write = RecordWrite(POLICY, pushed.version, doc, 0, (("kind", "policy"),))
            return Plan([entry], [write], lambda head: (pushed, True))

        result: tuple[PolicyVersion, bool] = self.log.sequencer.submit_commands([plan])[0].result()
        return result

    def _from_record(self, doc: bytes) -> PolicyVersion:
        value = json.loads(doc)
        source = source_from_json(value["source"])
        return PolicyVersion(source.version, source, value["pushed_at_ms"])

    def get(self, version: str) -> PolicyVersion:
        record = self.log.store.get_record(POLICY, version)
        if record is None:
            raise NotFoundError(f"no policy version {version!r}")
        return self._from_record(record.doc)

    def versions(self) -> list[PolicyVersion]:
        records = self.log.store.find_records(POLICY, {"kind": "policy"})
        return sorted((self._from_record(r.doc) for r in records), key=lambda p: p.pushed_at_ms)

    def active_version(self, view: StateView | None = None) -> str | None:
        """The active version: exact in a batch's ``view``, else cached."""
        if view is None and self._active is not None:
            return self._active[0]
        record = view.get(SETTING, ACTIVE) if view else self.log.store.get_record(SETTING, ACTIVE)
        version = None if record is None else self._version_in(record.doc)
        if view is None:
            self._active = (version,)
        return version

    def _version_in(self, doc: bytes) -> str:
        """The version an activation setting's document names (the last one read is
        remembered: every decision's commit checks it)."""
        known = self._active_doc
        if known is not None and known[0] == doc:
            return known[1]
        version = str(json.loads(doc)["version"])
        self._active_doc = (doc, version)
        return version

    def compiled(self, version: str) -> CompiledPolicy:
        """The compiled handles of ``version`` (cached)."""
        with self._lock:
            cached = self._compiled.get(version)
        if cached is not None:
            return cached
        compiled = compile_policies(self.get(version).source)
        with self._lock:
            if len(self._compiled) >= CACHE_SIZE:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[version] = compiled
        return compiled

    def activation_write(self, view: StateView, version: str) -> RecordWrite:
        """The record write that makes ``version`` active (it must exist)."""
        if view.get(POLICY, version) is None:
            raise NotFoundError(f"no policy version {version!r}")
        current = view.get(SETTING, ACTIVE)
        doc = canonical_entry({"version": version, "activated_at_ms": self.log.now_ms()})
        return RecordWrite(SETTING, ACTIVE, doc, current.version if current else 0)

    def put_entities(self, entities: Sequence[Mapping[str, Any]]) -> str:
        """Replace the entity set (logged); returns its version."""
        version = entities_version(entities)
        active = self.active_version()
        if active is not None:
            compile_entities(entities, self.compiled(active))  # refuse what the schema rejects
        doc = canonical_entry({"version": version, "entities": list(entities)})
        entry = self.log.prepare_event("entities_put", {"version": version}, {"version": version})

        def plan(view: StateView, first_index: int) -> Plan:
            current = view.get(ENTITIES, CURRENT)
            if current is not None and json.loads(current.doc)["version"] == version:
                return Plan([], [], lambda head: version)
            writes = [RecordWrite(ENTITIES, CURRENT, doc, current.version if current else 0)]
            if view.get(ENTITIES_VERSION, version) is None:  # kept for replay
                writes.append(RecordWrite(ENTITIES_VERSION, version, doc, 0))
            return Plan([entry], writes, lambda head: version)

        result: str = self.log.sequencer.submit_commands([plan])[0].result()
        self.invalidate()
        return result

    def entities(self, version: str | None = None) -> tuple[str, list[dict[str, Any]]]:
        """The current entity set, or the one stored under ``version``."""
        if version == entities_version([]):
            return version, []
        record = (
            self.log.store.get_record(ENTITIES, CURRENT)
            if version is None
            else self.log.store.get_record(ENTITIES_VERSION, version)
        )
        if record is None:
            if version is not None:
                raise NotFoundError(f"no entities version {version!r}")
            return entities_version([]), []
        value = json.loads(record.doc)
        return value["version"], value["entities"]

    def could_allow(
        self, principal: EntityRef, action: EntityRef, resources: Sequence[EntityRef]
    ) -> tuple[str | None, list[bool]]:
        """The active version, and for each resource whether it could allow ``action``
        to ``principal`` under some context (`lictor.core.policy.could_allow`)."""
        version = self.active_version()
        if version is None:
            return None, [False] * len(resources)
        try:
            policy = self.compiled(version)
            entities = self.compiled_entities(policy, version)
        except LictorError:
            return version, [False] * len(resources)
        return version, [could_allow(policy, entities, principal, action, r) for r in resources]

    def compiled_entities(
        self, policy: CompiledPolicy, policy_version: str, version: str | None = None
    ) -> CompiledEntities:
        """Entities (current, or ``version``) compiled for ``policy``, cached per pair."""
        if version is None:
            version = self._current_entities or self.entities()[0]
            self._current_entities = version
        key = (policy_version, version)
        with self._lock:
            cached = self._entities.get(key)
        if cached is not None:
            return cached
        compiled = compile_entities(self.entities(version)[1], policy)
        with self._lock:
            if len(self._entities) >= CACHE_SIZE:
                self._entities.pop(next(iter(self._entities)))
            self._entities[key] = compiled
        return compiled
