"""Tool pins: the definition each tool was first seen with, and changes waiting for an admin.

A gateway reports the tools a server offers (`Tools.observe`). The first time
a tool is seen, the hash of its definition (`lictor.core.tools`) is pinned as
approved (``tool_pinned``). A later report with another hash records it as
pending (``tool_changed``, once per distinct hash) and leaves the approved one
in place; an admin approves a pending hash (``tool_approved``). Each of these
is logged in the same transaction as the pin record changes, and a report
that changes nothing writes nothing.

A request for ``Tool::"<server>/<name>"`` must name the definition it was
made against (``definition``) once the tool has a pin; it is denied with
``definition_changed`` unless that is the approved hash (`pin_denial`, run in
the committer against the batch's view). A tool with no pin is checked only
if the request names a definition, which then must have been reported first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

from lictor.core.policy import Decision, ReasonCode
from lictor.core.tools import check_hash, check_server, definition, definition_hash, tool_id
from lictor.core.types import EntityRef
from lictor.errors import ConflictError, InvalidRequestError, NotFoundError
from lictor.log.entry import canonical_document
from lictor.sequencer import Plan
from lictor.service.log import AuditLog
from lictor.store.base import RecordWrite
from lictor.store.view import StateView

KIND = "tool_pin"
TOOL_TYPE = "Tool"
MAX_TOOLS = 1000


@dataclass(frozen=True)
class Pin:
    """A tool's approved definition, and a changed one waiting for approval."""

    tool: str
    approved: str
    definition: dict[str, Any]
    pinned_at_ms: int
    pending: str | None = None
    pending_definition: dict[str, Any] | None = None
    changed_at_ms: int | None = None
    record_version: int = 0

    @property
    def status(self) -> str:
        return "approved" if self.pending is None else "changed"

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        del body["record_version"]
        return {**body, "status": self.status}

    def write(self) -> RecordWrite:
        doc = canonical_document({k: v for k, v in self.to_json().items() if k != "status"})
        server = self.tool.split("/", 1)[0]
        tags = (("status", self.status), ("server", server))
        return RecordWrite(KIND, self.tool, doc, self.record_version, tags)

    @classmethod
    def from_doc(cls, doc: str | bytes, version: int) -> Pin:
        return cls(**json.loads(doc), record_version=version)


@dataclass(frozen=True)
class Reported:
    """A reported tool's definition and its hash, computed once per report."""

    definition: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, tool: Mapping[str, Any]) -> Reported:
        return cls(definition(tool), definition_hash(tool))


@dataclass(frozen=True)
class Seen:
    """One reported tool as the control plane judged it."""

    tool: str
    name: str
    hash: str
    status: str  # "approved" (the pinned hash) or "changed"
    approved: str
    pending: str | None
    definition: dict[str, Any]  # the approved one: what a client may be shown


class Tools:
    """Pin, list and approve tool definitions over the audit log."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def observe(self, server: str, tools: Sequence[Mapping[str, Any]], by: str) -> list[Seen]:
        """Judge each reported tool against its pin; pin new ones, record changes."""
        check_server(server)
        if len(tools) > MAX_TOOLS:
            raise InvalidRequestError(f"at most {MAX_TOOLS} tools per report")
        reported = {tool_id(server, str(t.get("name") or "")): Reported.of(t) for t in tools}
        if len(reported) != len(tools):
            raise InvalidRequestError("a tool name is reported twice")
        now = self.log.now_ms()
        pins = {tid: self.get(tid) for tid in reported}
        if any(_change(pins[t], t, d, now) for t, d in reported.items()):
            self._record(reported, now, by)
            pins = {tid: self.get(tid) for tid in reported}
        return [_seen(tid, d, pins[tid]) for tid, d in reported.items()]

    def _record(self, reported: Mapping[str, Reported], now: int, by: str) -> None:
        def plan(view: StateView, first_index: int) -> Plan:
            entries, writes = [], []
            for tid, d in reported.items():
                record = view.get(KIND, tid)
                pin = None if record is None else Pin.from_doc(record.doc, record.version)
                change = _change(pin, tid, d, now)
                if change is not None:
                    kind, new = change
                    entries.append(self._entry(kind, new, by))
                    writes.append(new.write())
            return Plan(entries, writes, lambda head: None)

        self.log.sequencer.submit_commands([plan])[0].result()

    def approve(self, tool: str, hash: str, by: str) -> Pin:
        """Make the pending ``hash`` of ``tool`` the approved one (logged)."""
        check_hash(hash)

        def plan(view: StateView, first_index: int) -> Plan:
            record = view.get(KIND, tool)
            if record is None:
                raise NotFoundError(f"no tool {tool!r} has been seen")
            pin = Pin.from_doc(record.doc, record.version)
            if pin.pending != hash or pin.pending_definition is None:
                raise ConflictError(f"{hash} is not the pending definition of {tool}")
            new = replace(
                pin,
                approved=hash,
                definition=pin.pending_definition,
                pending=None,
                pending_definition=None,
            )
            entry = self._entry("tool_approved", new, by, previous=pin.approved)
            return Plan([entry], [new.write()], lambda head: new)

        result: Pin = self.log.sequencer.submit_commands([plan])[0].result()
        return result

    def get(self, tool: str) -> Pin | None:
        record = self.log.store.get_record(KIND, tool)
        return None if record is None else Pin.from_doc(record.doc, record.version)

    def list(self, status: str | None = None) -> list[Pin]:
        """Every pin (or those with ``status``), by tool id."""
        filters = {} if status is None else {"status": status}
        found = self.log.store.find_records(KIND, filters, "", 100_000)
        return [Pin.from_doc(r.doc, r.version) for r in found]

    def _entry(self, kind: str, pin: Pin, by: str, previous: str | None = None) -> Any:
        shown = pin.pending or pin.approved
        public: dict[str, Any] = {"tool": pin.tool, "hash": shown, "by": by}
        if previous is not None:
            public["previous"] = previous
        elif kind == "tool_changed":
            public["approved"] = pin.approved
        event = {**public, "definition": pin.pending_definition or pin.definition}
        return self.log.prepare_event(kind, event, public)


def _change(pin: Pin | None, tid: str, seen: Reported, now: int) -> tuple[str, Pin] | None:
    """What a report of ``seen`` changes: ``(entry kind, new pin)``, or None."""
    if pin is None:
        return "tool_pinned", Pin(tid, seen.hash, seen.definition, now)
    if seen.hash in (pin.approved, pin.pending):
        return None
    return "tool_changed", replace(
        pin, pending=seen.hash, pending_definition=seen.definition, changed_at_ms=now
    )


def _seen(tid: str, seen: Reported, pin: Pin | None) -> Seen:
    name = str(seen.definition["name"])
    if pin is None:  # not reachable after a commit; fail closed all the same
        return Seen(tid, name, seen.hash, "changed", "", seen.hash, {})
    status = "approved" if seen.hash == pin.approved else "changed"
    return Seen(tid, name, seen.hash, status, pin.approved, pin.pending, pin.definition)


@lru_cache(maxsize=1024)
def _approved(doc: bytes) -> str:
    """The approved definition hash in a pin's document: read once per document, since
    a governed tool call checks it on every request (the document holds the whole
    definition, tens of µs to read)."""
    return Pin.from_doc(doc, 0).approved


def pin_denial(
    view: StateView, resource: EntityRef, definition: str | None, version: str
) -> Decision | None:
    """A deny if ``resource`` is a pinned tool and ``definition`` is not its approved hash."""
    if resource.type != TOOL_TYPE:
        return None
    record = view.get(KIND, resource.id)
    if record is None and definition is None:
        return None
    if record is None:
        message = f"tool {resource.id} was never reported, so no definition is approved"
    elif definition is None:
        message = f"tool {resource.id} is pinned; the request must name its definition"
    elif definition != _approved(record.doc):
        message = f"tool {resource.id} changed to {definition}, which no admin has approved"
    else:
        return None
    return Decision(False, (), (message,), version, "", ReasonCode.DEFINITION_CHANGED)
