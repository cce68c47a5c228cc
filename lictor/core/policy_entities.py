"""Entity sets (principals, groups, resources, …): versions and pre-parsed handles.

Pure: no I/O, no clock.

Entities use Cedar's JSON form, a list of
``{"uid": {"type": "Agent", "id": "planner-7"}, "attrs": {…}, "parents": [{…}]}``.

Guarantees:

- `entities_version` is the hex SHA-256 of `canonical_entities`: the RFC 8785
  JSON of the list sorted by uid, so the order entities were given in does not
  matter and any change to one does. A decision records it next to the policy
  version, so it names exactly what it used. (RFC 8785 keeps integers within
  ±(2^53-1); larger ones are refused.)
- `compile_entities` validates the set against a compiled policy's schema
  (attribute types, parent types) and adds the schema's action hierarchy; a
  set that does not conform raises `InvalidRequestError`. The handle is tied
  to that schema (`CompiledEntities.schema_version`): Cedar does not
  re-validate a pre-parsed handle, so `decide` refuses one built for another
  schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy
import rfc8785

from lictor.core.policy_compile import CompiledPolicy
from lictor.errors import InvalidRequestError

Uid = tuple[str, str]


@dataclass(frozen=True, eq=False)
class CompiledEntities:
    """A pre-parsed, schema-validated entity set; immutable and safe to share."""

    version: str
    schema_version: str
    handle: cedarpy.Entities
    uids: frozenset[Uid]

    def with_added(
        self, delta: Sequence[Mapping[str, Any]], policy: CompiledPolicy
    ) -> CompiledEntities:
        """This set plus ``delta``, validated with ``policy``'s schema; a new handle.

        Its version is ``<base version>+<delta version>``, so a decision that
        used a per-request delta still names exactly what it used.
        """
        version = f"{self.version}+{entities_version(delta)}"
        try:
            handle = self.handle.with_added_json_str(_json(delta), policy.schema)
        except ValueError as e:
            raise InvalidRequestError(f"entities: {e}") from None
        return CompiledEntities(version, self.schema_version, handle, self.uids | _uids(delta))


def canonical_entities(entities: Sequence[Mapping[str, Any]]) -> bytes:
    """RFC 8785 JSON of ``entities`` sorted by uid; `InvalidRequestError` if malformed."""
    by_uid = dict(zip(_uid_list(entities), entities, strict=True))
    try:
        return rfc8785.dumps([by_uid[uid] for uid in sorted(by_uid)])
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"entities are not canonical JSON: {e}") from None


def entities_version(entities: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(canonical_entities(entities)).hexdigest()


def compile_entities(
    entities: Sequence[Mapping[str, Any]], policy: CompiledPolicy
) -> CompiledEntities:
    """A handle for ``entities`` validated against ``policy``'s schema."""
    canonical = canonical_entities(entities)
    try:
        handle = cedarpy.Entities.from_json_str(canonical.decode(), policy.schema)
    except ValueError as e:
        raise InvalidRequestError(f"entities: {e}") from None
    version = hashlib.sha256(canonical).hexdigest()
    return CompiledEntities(version, policy.schema_version, handle, _uids(entities))


def _uid_list(entities: Sequence[Mapping[str, Any]]) -> list[Uid]:
    if isinstance(entities, str | bytes) or not isinstance(entities, Sequence):
        raise InvalidRequestError("entities must be a list")
    uids = [_uid(entity) for entity in entities]
    if len(set(uids)) != len(uids):
        raise InvalidRequestError("entities: a uid appears twice")
    return uids


def _uids(entities: Sequence[Mapping[str, Any]]) -> frozenset[Uid]:
    return frozenset(_uid_list(entities))


def _uid(entity: object) -> Uid:
    uid = entity.get("uid") if isinstance(entity, Mapping) else None
    if not isinstance(uid, Mapping) or set(uid) != {"type", "id"}:
        raise InvalidRequestError('every entity needs "uid": {"type": ..., "id": ...}')
    if not isinstance(uid["type"], str) or not isinstance(uid["id"], str):
        raise InvalidRequestError("entity uid type and id must be strings")
    return (uid["type"], uid["id"])


def _json(entities: Sequence[Mapping[str, Any]]) -> str:
    try:
        return json.dumps(list(entities), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"entities are not JSON: {e}") from None
