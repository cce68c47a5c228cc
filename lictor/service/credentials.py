"""Credentials and their lifecycle: issue, rotate, revoke, expire; and the check that
every request's credential passes.

A credential is a random secret shown once; only its SHA-256 is stored (the
store's credentials: hash to name and role, never changed once stored). What a
credential may still do is its *lifecycle*, kept in the ``credential`` record
of its name and changed only together with a log entry, in one commit:

- ``credential_added``: an admin issued an admin or auditor credential (name,
  role, by, key id, expiry). Runtime credentials are issued with their runtime
  (``runtime_added``, `lictor.service.runtimes`).
- ``credential_rotated``: a new secret replaces the credential's old one (its
  key id, the expiry); the old secret fails from that commit on.
- ``credential_revoked``: final; the credential fails from that commit on.

No entry holds a secret or its hash: a secret is named by its *key id*,
``key:`` and 16 hex digits of the SHA-256 of its hash (`key_id`).

Invariants:

- A credential works only while its record says ``active``, its expiry has not
  passed at the request's time, the secret's key id is the record's, and, for
  a runtime's credential, the runtime is not revoked. A name without a record
  (the bootstrap ``admin`` of ``admin.token``, a runtime's credential as first
  issued) is active, never expires and admits any secret stored under it; a
  record without a key id (issued before key ids) admits any too.
- Names are unique across people's credentials, runtimes and ``admin``.
- Issue and rotate commit their entry before the new secret's hash is stored,
  so no secret works without an audit record; a crash in between leaves a
  credential no secret opens (rotate it again).
- Revoking the last live admin credential is refused (`LastAdminError`),
  decided in the committer against the batch's view, so two concurrent
  revocations cannot both pass.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from lictor.datadir import hash_secret, new_secret
from lictor.errors import (
    ConflictError,
    CredentialExpiredError,
    CredentialRevokedError,
    InvalidRequestError,
    LastAdminError,
    NotFoundError,
    UnauthenticatedError,
)
from lictor.log.entry import canonical_entry
from lictor.sequencer import Plan
from lictor.service.log import AuditLog
from lictor.service.runtimes import KIND as RUNTIME_KIND
from lictor.service.runtimes import NAME, Runtime, check_label
from lictor.service.runtimes import ROLE as RUNTIME_ROLE
from lictor.store.base import Credential, Head, Record, RecordWrite, Store, StoredEntry
from lictor.store.view import StateView

KIND = "credential"
ROLES = ("admin", "auditor")  # issued here; runtime credentials come with their runtime
BOOTSTRAP_ADMIN = "admin"  # the data directory's first credential (admin.token)
KEY_PREFIX = "key:"
MAX_TTL_S = 10 * 366 * 86_400
RECHECK_S = 1.0  # how stale another replica's revocation may be seen (shared stores)
_CHANGES = frozenset({"credential_revoked", "credential_rotated", "runtime_revoked"})
_MAX_REMEMBERED = 4096

Get = Callable[[str, str], Record | None]


def key_id(secret_hash: bytes) -> str:
    """The public name of one secret: never the secret, never its stored hash."""
    return KEY_PREFIX + hashlib.sha256(secret_hash).hexdigest()[:16]


def expiry(now_ms: int, ttl_s: int | None) -> int | None:
    """When a credential given ``ttl_s`` seconds of life at ``now_ms`` expires (None: never)."""
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= MAX_TTL_S:
        raise InvalidRequestError(f"ttl must be a whole number of seconds in 1..{MAX_TTL_S}")
    return now_ms + ttl_s * 1000


@dataclass(frozen=True)
class Issued:
    """A credential's lifecycle as its record holds it (never its secret).

    ``state`` is ``active`` or ``revoked``; expiry is not a state change but a
    time (`status` says ``expired`` once it passed). ``key_id`` names the one
    secret that works (None: any stored under the name).
    """

    name: str
    role: str
    created_at_ms: int
    by: str
    state: str = "active"
    expires_at_ms: int | None = None
    key_id: str | None = None
    rotated_at_ms: int | None = None
    revoked_at_ms: int | None = None
    revoked_by: str | None = None

    def status(self, now_ms: int) -> str:
        """``active``, ``revoked`` or ``expired`` at ``now_ms``."""
        if self.state != "active":
            return self.state
        if self.expires_at_ms is not None and now_ms >= self.expires_at_ms:
            return "expired"
        return "active"

    def write(self, expected_version: int) -> RecordWrite:
        tags = [("role", self.role), ("state", self.state)]
        if self.key_id is not None:
            tags.append(("key", self.key_id))
        return RecordWrite(
            KIND, self.name, canonical_entry(asdict(self)), expected_version, tuple(tags)
        )

    def public(self) -> dict[str, Any]:
        """What a log entry says of it: the name, role and secret's key id, the expiry."""
        return {
            "credential": self.name,
            "role": self.role,
            "key_id": self.key_id,
            "expires_at_ms": self.expires_at_ms,
        }

    @classmethod
    def from_doc(cls, doc: bytes) -> Issued:
        return cls(**json.loads(doc))


def lookup(get: Get, name: str) -> tuple[int, Issued]:
    """The credential ``name``'s lifecycle and its record's version (0: no record yet).

    Without a record, ``admin`` is the bootstrap credential and a runtime's name
    its credential as issued with it; anything else is `NotFoundError`.
    """
    record = get(KIND, name)
    if record is not None:
        return record.version, Issued.from_doc(record.doc)
    if name == BOOTSTRAP_ADMIN:
        return 0, Issued(name, "admin", 0, "bootstrap")
    runtime = get(RUNTIME_KIND, name)
    if runtime is not None:
        return 0, Issued(name, RUNTIME_ROLE, Runtime.from_doc(runtime.doc).created_at_ms, "")
    raise NotFoundError(f"no credential {name!r}")


def _runtime_revoked(get: Get, issued: Issued) -> bool:
    if issued.role != RUNTIME_ROLE:
        return False
    record = get(RUNTIME_KIND, issued.name)
    return record is not None and Runtime.from_doc(record.doc).state == "revoked"


def _resolve(view: StateView, target: str) -> tuple[int, Issued]:
    """A credential by name, or by its current secret's key id (``key:...``)."""
    if not target.startswith(KEY_PREFIX):
        return lookup(view.get, target)
    found = view.find(KIND, {"key": target})
    if not found:
        raise NotFoundError(f"no credential's current secret is {target!r}")
    return found[0].version, Issued.from_doc(found[0].doc)


def _live_admins(view: StateView, now_ms: int) -> int:
    """Admin credentials that work at ``now_ms`` (the bootstrap one until it has a record)."""
    issued = [Issued.from_doc(r.doc) for r in view.find(KIND, {"role": "admin"})]
    live = sum(1 for i in issued if i.status(now_ms) == "active")
    return live + (1 if view.get(KIND, BOOTSTRAP_ADMIN) is None else 0)


class Credentials:
    """Issue, list, rotate and revoke credentials over the audit log."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def add(self, name: str, role: str, by: str, ttl_s: int | None = None) -> tuple[Issued, str]:
        """Issue a credential; returns it and its secret (shown only now)."""
        check_label(name, "credential name", NAME)
        if role not in ROLES:
            raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}")
        now = self.log.now_ms()
        secret = new_secret()
        secret_hash = hash_secret(secret)
        issued = Issued(name, role, now, by, expires_at_ms=expiry(now, ttl_s))
        issued = replace(issued, key_id=key_id(secret_hash))
        public: dict[str, Any] = {"name": name, "role": role, "by": by}
        public |= {"key_id": issued.key_id, "expires_at_ms": issued.expires_at_ms}
        entry = self.log.prepare_event("credential_added", public, public)

        def plan(view: StateView, first_index: int) -> Plan:
            taken = name == BOOTSTRAP_ADMIN or view.get(RUNTIME_KIND, name) is not None
            if taken or view.get(KIND, name) is not None:
                raise ConflictError(f"a credential named {name!r} already exists")
            return Plan([entry], [issued.write(0)], lambda head: issued)

        self.log.sequencer.submit_commands([plan])[0].result()
        self.log.store.add_credential(Credential(name, role, secret_hash))
        return issued, secret

    def rotate(self, target: str, by: str, ttl_s: int | None = None) -> tuple[Issued, str]:
        """Give a credential a new secret (returned, shown only now); the old one stops
        working when the rotation commits. Keeps the expiry unless ``ttl_s`` sets one."""
        now = self.log.now_ms()
        new_expiry = expiry(now, ttl_s)
        secret = new_secret()
        secret_hash = hash_secret(secret)

        def plan(view: StateView, first_index: int) -> Plan:
            version, issued = _resolve(view, target)
            if issued.state == "revoked" or _runtime_revoked(view.get, issued):
                raise ConflictError(f"credential {issued.name!r} is revoked; issue a new one")
            expires = new_expiry if ttl_s is not None else issued.expires_at_ms
            if expires is not None and expires <= now:
                raise InvalidRequestError(f"credential {issued.name!r} expired; give it a ttl")
            new = replace(issued, key_id=key_id(secret_hash), rotated_at_ms=now)
            new = replace(new, expires_at_ms=expires)
            public = {**new.public(), "by": by}
            entry = self.log.prepare_event("credential_rotated", public, public)
            return Plan([entry], [new.write(version)], lambda head: new)

        rotated: Issued = self.log.sequencer.submit_commands([plan])[0].result()
        self.log.store.add_credential(Credential(rotated.name, rotated.role, secret_hash))
        return rotated, secret

    def revoke(self, target: str, by: str, reason: str = "") -> Issued:
        """Revoke a credential for good (logged first); revoking it again changes nothing.
        `LastAdminError` if it is the last admin credential that works."""
        now = self.log.now_ms()

        def plan(view: StateView, first_index: int) -> Plan:
            version, issued = _resolve(view, target)
            if issued.state == "revoked":
                return Plan([], [], lambda head: issued)
            if (
                issued.role == "admin"
                and issued.status(now) == "active"
                and _live_admins(view, now) <= 1
            ):
                raise LastAdminError(
                    f"{issued.name!r} is the last admin credential that works;"
                    " issue another admin credential first"
                )
            new = replace(issued, state="revoked", revoked_at_ms=now, revoked_by=by)
            public = {"credential": new.name, "role": new.role, "by": by}
            event = {**public, "key_id": new.key_id, "reason": reason}
            entry = self.log.prepare_event("credential_revoked", event, public)
            return Plan([entry], [new.write(version)], lambda head: new)

        revoked: Issued = self.log.sequencer.submit_commands([plan])[0].result()
        return revoked

    def list(self) -> list[dict[str, Any]]:
        """Every credential, by name: lifecycle and status now, never a secret."""
        now = self.log.now_ms()
        store = self.log.store
        issued = {i.name: i for i in map(_from_record, store.find_records(KIND, {}, "", 10_000))}
        found = store.find_records(RUNTIME_KIND, {}, "", 10_000)
        runtimes = {r.key: Runtime.from_doc(r.doc) for r in found}
        issued.setdefault(BOOTSTRAP_ADMIN, lookup(store.get_record, BOOTSTRAP_ADMIN)[1])
        for runtime in runtimes.values():
            issued.setdefault(
                runtime.id, Issued(runtime.id, RUNTIME_ROLE, runtime.created_at_ms, "")
            )
        shown = []
        for name in sorted(issued):
            item = issued[name]
            of = runtimes.get(name)
            gone = item.role == RUNTIME_ROLE and of is not None and of.state == "revoked"
            shown.append({**asdict(item), "state": "revoked" if gone else item.status(now)})
        return shown


def _from_record(record: Record) -> Issued:
    return Issued.from_doc(record.doc)


@dataclass(frozen=True)
class Standing:
    """What decides whether a stored secret of one name works (read from the records)."""

    state: str = "active"
    expires_at_ms: int | None = None
    key_id: str | None = None
    runtime_revoked: bool = False

    @classmethod
    def of(cls, record: Record | None, runtime: Record | None) -> Standing:
        """From a credential's record and (for a runtime's) its runtime's record."""
        revoked = runtime is not None and Runtime.from_doc(runtime.doc).state == "revoked"
        if record is None:
            return cls(runtime_revoked=revoked)
        issued = Issued.from_doc(record.doc)
        return cls(issued.state, issued.expires_at_ms, issued.key_id, revoked)

    def refuse(self, credential: Credential, now_ms: int) -> UnauthenticatedError | None:
        """Why ``credential`` fails at ``now_ms``, or None when it works."""
        name = credential.name
        if self.state == "revoked":
            return CredentialRevokedError(f"credential {name!r} is revoked")
        if self.runtime_revoked:
            return CredentialRevokedError(f"runtime {name!r} is revoked")
        if self.key_id is not None and self.key_id != key_id(credential.secret_hash):
            return CredentialRevokedError(f"this secret of {name!r} was replaced by a rotation")
        if self.expires_at_ms is not None and now_ms >= self.expires_at_ms:
            return CredentialExpiredError(f"credential {name!r} expired")
        return None


class CredentialCheck:
    """Authenticates a secret's hash at a given time: `authenticate`.

    Freshness: on a store only this process writes, each check reads the
    records (an exclusive SQLite store answers them from memory), so a change
    holds from its commit on. On a shared store (replicas), a credential's
    standing is remembered for at most `RECHECK_S` seconds: a revocation or
    rotation committed by another replica fails the old secret within that
    bound, one committed here at once (the commit listener forgets everything
    before the caller hears of its commit), and a secret whose key id the
    remembered standing does not know is read afresh (a rotation elsewhere).
    Expiry is compared with the request's time on every check.
    """

    def __init__(self, store: Store, remember_s: float) -> None:
        self._store = store
        self._remember_s = remember_s
        self._lock = threading.Lock()
        self._generation = 0
        self._known: dict[str, tuple[float, Standing]] = {}
        self._parsed: dict[str, tuple[Record | None, Record | None, Standing]] = {}

    @classmethod
    def of(cls, log: AuditLog) -> CredentialCheck:
        """A check of ``log``'s credentials, listening to its commits when its store is
        shared (the app makes one, `lictor.server.app.create_app`)."""
        check = cls(log.store, RECHECK_S if log.store.shared else 0.0)
        if log.store.shared:
            log.sequencer.add_commit_listener(check.committed)
        return check

    def authenticate(self, secret_hash: bytes, now_ms: int) -> Credential:
        """The credential ``secret_hash`` opens at ``now_ms``; `UnauthenticatedError`
        (or a subclass saying revoked or expired) when it opens none."""
        credential = self._store.find_credential(secret_hash)
        if credential is None:
            raise UnauthenticatedError("unknown credential")
        standing = self._standing(credential, fresh=False)
        if standing.key_id is not None and standing.key_id != key_id(secret_hash):
            standing = self._standing(credential, fresh=True)  # rotated to it elsewhere?
        refused = standing.refuse(credential, now_ms)
        if refused is not None:
            raise refused
        return credential

    def committed(self, head: Head, entries: Sequence[StoredEntry]) -> None:
        """Commit listener: forget every remembered standing after a lifecycle change."""
        for stored in entries:
            entry = getattr(stored, "entry", None)
            if isinstance(entry, dict) and entry.get("kind") in _CHANGES:
                self.forget()
                return

    def forget(self) -> None:
        with self._lock:
            self._generation += 1
            self._known.clear()

    def _standing(self, credential: Credential, fresh: bool) -> Standing:
        if not self._remember_s:
            return self._parse(credential)
        name = credential.name
        started = time.monotonic()
        with self._lock:
            known = self._known.get(name)
            generation = self._generation
        if known is not None and not fresh and started - known[0] < self._remember_s:
            return known[1]
        standing = Standing.of(*self._records(credential))
        with self._lock:
            if generation == self._generation:  # no change committed here meanwhile
                if len(self._known) >= _MAX_REMEMBERED:
                    self._known.clear()
                self._known[name] = (started, standing)
        return standing

    def _parse(self, credential: Credential) -> Standing:
        """The standing from the records, parsed again only when they changed."""
        name = credential.name
        record, runtime = self._records(credential)
        parsed = self._parsed.get(name)
        if parsed is not None and parsed[0] is record and parsed[1] is runtime:
            return parsed[2]
        standing = Standing.of(record, runtime)
        if len(self._parsed) >= _MAX_REMEMBERED:
            self._parsed.clear()
        self._parsed[name] = (record, runtime, standing)
        return standing

    def _records(self, credential: Credential) -> tuple[Record | None, Record | None]:
        record = self._store.get_record(KIND, credential.name)
        if credential.role != RUNTIME_ROLE:
            return record, None
        return record, self._store.get_record(RUNTIME_KIND, credential.name)
