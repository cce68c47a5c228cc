"""What readers see of an execution's arguments: a keyed hash, unless policy says otherwise.

``context.arguments`` is where an enforcement point puts what the work was
called with: a tool call's arguments, a job's parameters. Those may hold
what not every reader should see (file contents, queries, tokens). Policies
evaluate them in full; the log event, receipts and API views show instead
``"hmac-sha256:<hex>"``: HMAC-SHA256 of the RFC 8785 canonical JSON of the
arguments, under a key derived (HKDF-SHA256) from the deployment's grant
key. Whoever holds that key, the control plane, can check a guessed value
(`ArgumentSeal.hash`); a reader without it cannot test guesses, which a
plain hash of a short path or query would allow.

Error messages that Cedar writes into a decision (a request the schema
rejects, an evaluation error) may quote the context, so when the arguments
are sealed those errors are shown as keyed hashes too.

A decision whose determining policies include one annotated
``@log_arguments("raw")`` shows the arguments as they are, in every entry and
view of that execution. The raw arguments stay in the execution's record,
which only the control plane reads, since each renewal re-verifies with them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lictor.core.policy_schema import ARGUMENTS
from lictor.log.entry import canonical_json

PREFIX = "hmac-sha256:"
KNOWN = 1024  # hashes remembered (`ArgumentSeal.hash`), of arguments of at most
KNOWN_BYTES = 4096  # this many bytes as JSON: at most about 4 MiB held
_SORTED_JSON_ONLY = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_INFO = b"lictor/arguments-hmac/v1"
# decisions whose error messages come from Cedar (or an exception) and may quote the context
QUOTING = frozenset({"invalid_request", "policy_error", "internal_error"})


class ArgumentSeal:
    """Replaces ``context.arguments`` by its keyed hash for everything a reader sees."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        # hashes by the arguments' sorted orjson bytes: one call's arguments are sealed
        # in its entries and its answers, each time from the same value
        self._known: dict[bytes, str] = {}

    @classmethod
    def derived(cls, seed: bytes) -> ArgumentSeal:
        """The seal keyed from a secret seed (the grant key's), so replicas agree."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
        return cls(hkdf.derive(seed))

    def hash(self, arguments: Any) -> str:
        """``hmac-sha256:<hex>`` of ``arguments`` (any JSON value).

        Equal values have equal sorted orjson bytes, and those bytes read back to the
        value, so a hash is remembered by them (`KNOWN` at most, then forgotten all at
        once). Hashed each time instead: what orjson refuses (an integer beyond 64
        bits, a key that is not text, what is not JSON), bytes holding ``null``
        (orjson writes a NaN or an infinity as ``null`` too), and large arguments
        (over `KNOWN_BYTES`: what they would hold in memory)."""
        try:
            seen: bytes | None = orjson.dumps(arguments, option=_SORTED_JSON_ONLY)
        except orjson.JSONEncodeError:
            seen = None
        if seen is not None and (b"null" in seen or len(seen) > KNOWN_BYTES):
            seen = None
        known = self._known.get(seen) if seen is not None else None
        if known is not None:
            return known
        data = canonical_json(arguments)
        sealed = PREFIX + hmac.new(self._key, data, hashlib.sha256).hexdigest()
        if seen is not None:
            if len(self._known) >= KNOWN:
                self._known = {}
            self._known[seen] = sealed
        return sealed

    def shown(self, context: Mapping[str, Any], sealed: bool) -> dict[str, Any]:
        """``context`` as a reader sees it: its arguments hashed if ``sealed``."""
        if not sealed or ARGUMENTS not in context:
            return dict(context)
        return {**context, ARGUMENTS: self.hash(context[ARGUMENTS])}

    def decision(self, decision: Mapping[str, Any] | None, sealed: bool) -> Any:
        """A stored decision as a reader sees it: when the arguments are sealed, the
        errors of a decision whose messages may quote them (Cedar's request and
        evaluation errors) are replaced by their keyed hashes."""
        if not sealed or not decision or decision.get("reason_code") not in QUOTING:
            return decision
        errors = [f"sealed: {self.hash(e)}" for e in decision.get("errors") or ()]
        return {**decision, "errors": errors}
