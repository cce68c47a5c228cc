"""Runtimes: the enforcement points, their credentials, heartbeats and attestation.

A runtime is added by an admin (logged, ``runtime_added``) and receives a
credential with role ``runtime`` whose secret is shown once; only its hash
is stored. A runtime heartbeats with its attestation; a heartbeat that
reports a new attestation is logged (``runtime_attested``), one that repeats
the last only moves ``last_heartbeat``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from typing import Any

from lictor.core.policy import RuntimeFacts
from lictor.datadir import hash_secret, new_secret
from lictor.errors import ConflictError, InvalidRequestError, NotFoundError
from lictor.log.entry import canonical_entry
from lictor.sequencer import Command, Plan
from lictor.service.log import AuditLog
from lictor.store.base import Credential, Record, RecordWrite
from lictor.store.view import StateView

KIND = "runtime"
ROLE = "runtime"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class Runtime:
    """An enforcement point as stored."""

    id: str
    region: str
    cluster: str
    state: str = "active"
    attestation: dict[str, Any] | None = None
    last_heartbeat_ms: int | None = None
    created_at_ms: int = 0

    @cached_property
    def facts(self) -> RuntimeFacts:
        """What a decision knows of this runtime (its ``context.lictor.runtime``); made
        once per parsed runtime: `Runtimes.parsed` hands out the same one while its
        record is unchanged, and each decision asks for it twice."""
        attestation = self.attestation or {}
        digests = tuple(sorted(attestation.get("digests", {}).values()))
        state = str(attestation.get("state", "unverified"))
        return RuntimeFacts(self.id, self.region, self.cluster, state, digests)

    def doc(self) -> bytes:
        return canonical_entry(asdict(self))

    def write(self, expected_version: int) -> RecordWrite:
        tags = (("cluster", self.cluster), ("region", self.region), ("state", self.state))
        return RecordWrite(KIND, self.id, self.doc(), expected_version, tags)

    @classmethod
    def from_doc(cls, doc: bytes) -> Runtime:
        return cls(**json.loads(doc))


def check_label(value: str, what: str, pattern: re.Pattern[str] = LABEL) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequestError(f"{what} must match {pattern.pattern}")
    return value


DECISION_CACHE_S = 1.0
PARSED_RUNTIMES = 4096  # runtimes kept parsed (`Runtimes.parsed`)


class Runtimes:
    """Use cases for runtimes over the audit log and its store."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._recent: dict[str, tuple[float, Runtime]] = {}
        self._parsed: dict[str, tuple[Record, Runtime]] = {}

    def add(self, name: str, region: str, cluster: str) -> tuple[Runtime, str]:
        """Register a runtime; returns it and its credential (shown only now)."""
        runtime = Runtime(
            check_label(name, "runtime name", NAME),
            check_label(region, "region"),
            check_label(cluster, "cluster"),
            created_at_ms=self.log.now_ms(),
        )
        public = {"runtime": runtime.id, "region": runtime.region, "cluster": runtime.cluster}
        entry = self.log.prepare_event("runtime_added", public, public)

        def plan(view: StateView, first_index: int) -> Plan:
            if view.get(KIND, runtime.id) is not None:
                raise ConflictError(f"runtime {runtime.id!r} already exists")
            if runtime.id == "admin" or view.get("credential", runtime.id) is not None:
                raise ConflictError(f"a credential named {runtime.id!r} already exists")
            return Plan([entry], [runtime.write(0)], lambda head: runtime)

        self.log.sequencer.submit_commands([plan])[0].result()
        secret = new_secret()
        self.log.store.add_credential(Credential(runtime.id, ROLE, hash_secret(secret)))
        return runtime, secret

    def get(self, runtime_id: str) -> Runtime:
        record = self.log.store.get_record(KIND, runtime_id)
        if record is None:
            raise NotFoundError(f"no runtime {runtime_id!r}")
        return self.parsed(record)

    def parsed(self, record: Record) -> Runtime:
        """The runtime ``record`` holds; parsed again only when the record changed
        (each decision reads its runtime twice: to decide, and when it commits)."""
        known = self._parsed.get(record.key)
        if known is not None and (known[0] is record or known[0] == record):
            return known[1]
        runtime = Runtime.from_doc(record.doc)
        if len(self._parsed) >= PARSED_RUNTIMES:
            self._parsed.clear()
        self._parsed[record.key] = (record, runtime)
        return runtime

    def for_decision(self, runtime_id: str) -> Runtime:
        """`get`, for facts a decision is made on: with a shared store, a runtime read in
        the last `DECISION_CACHE_S` seconds is reused. Safe because every decision's
        commit checks the runtime again in the database (a revoked runtime denies, changed
        facts decide again after `forget`)."""
        if not self.log.store.shared:
            return self.get(runtime_id)  # an exclusive store already answers from memory
        now = time.monotonic()
        cached = self._recent.get(runtime_id)
        if cached is not None and now - cached[0] < DECISION_CACHE_S:
            return cached[1]
        runtime = self.get(runtime_id)
        if len(self._recent) > 4096:
            self._recent.clear()
        self._recent[runtime_id] = (now, runtime)
        return runtime

    def forget(self) -> None:
        """Drop what `for_decision` remembers (a decision turned out stale)."""
        self._recent.clear()

    def list(self, region: str | None = None, cluster: str | None = None) -> list[Runtime]:
        tags = {k: v for k, v in (("region", region), ("cluster", cluster)) if v is not None}
        return [Runtime.from_doc(r.doc) for r in self.log.store.find_records(KIND, tags)]

    def revoke_command(self, runtime_id: str, reason: str) -> Command:
        """The command marking a runtime revoked; its result is the `Runtime`."""
        public = {"runtime": runtime_id}
        entry = self.log.prepare_event("runtime_revoked", {**public, "reason": reason}, public)

        def plan(view: StateView, first_index: int) -> Plan:
            record = view.get(KIND, runtime_id)
            if record is None:
                raise NotFoundError(f"no runtime {runtime_id!r}")
            old = Runtime.from_doc(record.doc)
            if old.state == "revoked":
                return Plan([], [], lambda head: old)
            new = replace(old, state="revoked")
            return Plan([entry], [new.write(record.version)], lambda head: new)

        return plan

    def heartbeat_command(self, runtime_id: str, attestation: dict[str, Any] | None) -> Command:
        """The command recording a heartbeat; its result is ``(runtime, changed)``."""
        now = self.log.now_ms()
        public = {"runtime": runtime_id}
        event = {"runtime": runtime_id, "attestation": attestation}
        entry = self.log.prepare_event("runtime_attested", event, public)

        def plan(view: StateView, first_index: int) -> Plan:
            record = view.get(KIND, runtime_id)
            if record is None:
                raise NotFoundError(f"no runtime {runtime_id!r}")
            old = Runtime.from_doc(record.doc)
            if old.state != "active":
                raise ConflictError(f"runtime {runtime_id!r} is {old.state}")
            new = replace(old, last_heartbeat_ms=now, attestation=attestation or old.attestation)
            changed = new.attestation != old.attestation
            entries = [entry] if changed else []
            return Plan(entries, [new.write(record.version)], lambda head: (new, changed))

        return plan
