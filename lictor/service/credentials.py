"""People's credentials: admins issue admin and auditor credentials, logged.

A credential is a random secret shown once; only its SHA-256 is stored.
Issuing one is logged (``credential_added``: name, role, and who issued it)
before the credential exists, so no credential works without an audit
record. Names are unique, so the log's ``by`` names one credential: an issued
name is neither ``admin`` (the bootstrap credential) nor a runtime's, and a
``credential`` record holds each one's name, role and issue time, never the
secret. Runtime
credentials are issued with their runtime (`lictor.service.runtimes`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lictor.datadir import hash_secret, new_secret
from lictor.errors import ConflictError, InvalidRequestError
from lictor.log.entry import canonical_entry
from lictor.sequencer import Plan
from lictor.service.log import AuditLog
from lictor.service.runtimes import KIND as RUNTIME_KIND
from lictor.service.runtimes import NAME, check_label
from lictor.store.base import Credential, RecordWrite
from lictor.store.view import StateView

KIND = "credential"
ROLES = ("admin", "auditor")
BOOTSTRAP_ADMIN = "admin"  # the data directory's first credential (admin.token)


@dataclass(frozen=True)
class Issued:
    """A credential as listed: who it names, its role, when and by whom it was issued."""

    name: str
    role: str
    created_at_ms: int
    by: str


class Credentials:
    """Issue and list people's credentials over the audit log."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def add(self, name: str, role: str, by: str) -> tuple[Issued, str]:
        """Issue a credential; returns it and its secret (shown only now)."""
        check_label(name, "credential name", NAME)
        if role not in ROLES:
            raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
        issued = Issued(name, role, self.log.now_ms(), by)
        public = {"name": name, "role": role, "by": by}
        entry = self.log.prepare_event("credential_added", public, public)
        doc = canonical_entry(issued.__dict__)
        write = RecordWrite(KIND, name, doc, 0, (("role", role),))

        def plan(view: StateView, first_index: int) -> Plan:
            taken = name == BOOTSTRAP_ADMIN or view.get(RUNTIME_KIND, name) is not None
            if taken or view.get(KIND, name) is not None:
                raise ConflictError(f"a credential named {name!r} already exists")
            return Plan([entry], [write], lambda head: issued)

        self.log.sequencer.submit_commands([plan])[0].result()
        secret = new_secret()
        self.log.store.add_credential(Credential(name, role, hash_secret(secret)))
        return issued, secret

    def list(self) -> list[Issued]:
        """Every credential issued here, by name."""
        found = self.log.store.find_records(KIND, {}, "", 10_000)
        return [Issued(**json.loads(record.doc)) for record in found]
