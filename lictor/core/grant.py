"""Grants: the EdDSA-signed JWT an allowed execution carries (RFC 7519, RFC 8037).

Pure: no I/O, no clock (time comes in as ``now_ms``), no randomness (keys come
in as seeds). Grants are written as compact JWS directly; PyJWT checks the
signature when one is verified. Every claim, and all time checks, are
done here against the ``now_ms`` the caller passes, so nothing depends on the
wall clock and everything is testable without sleeping.

A grant's header is exactly ``{"alg": "EdDSA", "typ": "lictor-grant+jwt",
"kid": <key id>}`` (explicit typing, RFC 8725 §3.11). Its claims:

- ``iss`` the issuer, ``sub`` the principal as ``Type::"id"``, ``jti`` the
  execution id; ``iat`` and ``nbf`` the issue second, ``exp`` the lease expiry
  rounded *down* to the second, so a grant never outlives its lease.
- ``action``, ``resource`` (``Type::"id"``), ``parent_id``, ``root_id``,
  ``depth``, ``policy_version``, ``runtime_id`` (null for none; a root has
  ``parent_id`` null and ``root_id == jti``).
- ``act`` (RFC 8693 §4.1), only for a child: the parent's principal as
  ``act.sub``, the grandparent's as ``act.act.sub``, and so on to the root.

`verify_grant` guarantees: only EdDSA with the verifier's key and key id is
accepted (never ``none``, HS* or another key); tokens over `MAX_GRANT_BYTES`,
malformed or non-canonical base64url, unknown header parameters (``crit``,
``b64``, ``jwk``...), missing or mistyped claims, an ``aud`` claim, a wrong
issuer, a lineage that does not add up, ``now_ms >= exp`` and ``now_ms < nbf``
(each widened by the leeway) are all refused with `UnauthenticatedError`; no
PyJWT or JSON exception ever escapes. Other claims are ignored: they are
signed, so a later version may add some without breaking older verifiers.

Keys: `GrantSigner` holds a 32-byte Ed25519 seed (its own key, not the log's
note key); `GrantVerifier` holds the public half and exports it as an RFC 8037
JWK so anyone can verify grants; `jwk_thumbprint` (RFC 7638) makes a stable
key id. Generate a seed with ``os.urandom(32)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.types import Options

from lictor.core.lease import effective_state
from lictor.core.types import (
    MAX_TIME_MS,
    EntityRef,
    Execution,
    ExecutionState,
    check_execution_id,
    check_label,
    check_time_ms,
)
from lictor.errors import (
    GrantError,
    InvalidRequestError,
    InvalidTransitionError,
    LeaseExpiredError,
)

ALGORITHM = "EdDSA"
GRANT_TYPE = "lictor-grant+jwt"
MAX_GRANT_BYTES = 8192
MAX_LEEWAY_MS = 300_000
MAX_KEY_ID_LENGTH = 128
MAX_ISSUER_LENGTH = 256
MAX_DEPTH_CLAIM = 1024
_MAX_SECONDS = MAX_TIME_MS // 1000
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_DECODE_OPTIONS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}


@dataclass(frozen=True)
class GrantClaims:
    """A verified grant. ``delegation`` runs root first and ends with ``principal``."""

    issuer: str
    principal: EntityRef
    execution_id: str
    issued_at_ms: int
    not_before_ms: int
    expires_at_ms: int
    action: EntityRef
    resource: EntityRef
    parent_id: str | None
    root_id: str
    depth: int
    policy_version: str
    runtime_id: str | None
    delegation: tuple[EntityRef, ...]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidRequestError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64url(data) != text:
        raise InvalidRequestError("base64url has non-canonical trailing bits")
    return data


def jwk_thumbprint(public_key: bytes) -> str:
    """The RFC 7638 SHA-256 thumbprint of an Ed25519 public key, base64url."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_key)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class GrantVerifier:
    """Trusts grants signed by one Ed25519 key (``key_id``) for one ``issuer``."""

    def __init__(self, public_key: bytes, key_id: str, issuer: str) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise InvalidRequestError("an Ed25519 public key is 32 bytes")
        self._public = public_key
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self._key_id = check_label(key_id, "key id", MAX_KEY_ID_LENGTH)
        self._issuer = check_label(issuer, "issuer", MAX_ISSUER_LENGTH)

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def key(self) -> Ed25519PublicKey:
        return self._key

    def jwk(self) -> dict[str, str]:
        """The public key as an RFC 8037 JWK, for a JWKS document."""
        x = _b64url(self._public)
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self._key_id, "alg": ALGORITHM}

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, object], issuer: str) -> GrantVerifier:
        """Read a public Ed25519 JWK (``kty`` OKP, ``crv`` Ed25519, ``x``, ``kid``)."""
        if not isinstance(jwk, Mapping) or "d" in jwk:
            raise InvalidRequestError("a grant JWK is an object holding no private key")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise InvalidRequestError("a grant JWK has kty OKP and crv Ed25519")
        if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
            raise InvalidRequestError("a grant JWK is for EdDSA signatures")
        x, kid = jwk.get("x"), jwk.get("kid")
        if not isinstance(x, str) or not isinstance(kid, str):
            raise InvalidRequestError("a grant JWK needs x and kid strings")
        return cls(_b64url_decode(x), kid, issuer)


class GrantSigner:
    """Signs grants with an Ed25519 key made from a 32-byte seed."""

    def __init__(self, private_key_seed: bytes, key_id: str, issuer: str) -> None:
        if not isinstance(private_key_seed, bytes) or len(private_key_seed) != 32:
            raise InvalidRequestError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(private_key_seed)
        public = self._key.public_key().public_bytes_raw()
        self._verifier = GrantVerifier(public, key_id, issuer)
        header = {"alg": ALGORITHM, "typ": GRANT_TYPE, "kid": key_id}
        self._header = _b64url(_compact_json(header))

    @property
    def verifier(self) -> GrantVerifier:
        return self._verifier

    def sign(self, execution: Execution, now_ms: int) -> str:
        """The grant for ``execution``, which must be effectively active at ``now_ms``."""
        claims = grant_claims(execution, self._verifier.issuer, now_ms)
        signing_input = f"{self._header}.{_b64url(_compact_json(claims))}"
        signature = self._key.sign(signing_input.encode())
        token = f"{signing_input}.{_b64url(signature)}"
        if len(token) > MAX_GRANT_BYTES:
            raise GrantError(f"the grant of {execution.id} would exceed {MAX_GRANT_BYTES} bytes")
        return token


def _compact_json(value: object) -> bytes:
    """JSON as JWS serializes it here: compact, UTF-8 (the claims are text and integers)."""
    return orjson.dumps(value)


def grant_claims(execution: Execution, issuer: str, now_ms: int) -> dict[str, object]:
    """The claims of ``execution``'s grant (see the module docstring)."""
    lease, version = execution.lease, execution.policy_version
    if effective_state(execution, now_ms) is not ExecutionState.ACTIVE:
        raise InvalidTransitionError(f"execution {execution.id} is not active; no grant")
    assert lease is not None and version is not None  # every active execution has both
    issued, expires = now_ms // 1000, lease.expires_at_ms // 1000
    if expires * 1000 <= now_ms:
        raise LeaseExpiredError(f"execution {execution.id}'s lease ends within this second")
    claims: dict[str, object] = {"iss": issuer, "sub": str(execution.principal)}
    claims |= {"jti": execution.id, "iat": issued, "nbf": issued, "exp": expires}
    claims |= _lictor_claims(execution, version)
    actor = _actor_claim(execution.delegation[:-1])
    return claims if actor is None else claims | {"act": actor}


def _lictor_claims(execution: Execution, policy_version: str) -> dict[str, object]:
    return {
        "action": str(execution.action),
        "resource": str(execution.resource),
        "parent_id": execution.parent_id,
        "root_id": execution.root_id,
        "depth": execution.depth,
        "policy_version": policy_version,
        "runtime_id": execution.runtime_id,
    }


def _actor_claim(ancestors: tuple[EntityRef, ...]) -> dict[str, object] | None:
    """RFC 8693 ``act``: the nearest ancestor outermost, the root innermost."""
    actor: dict[str, object] | None = None
    for principal in ancestors:
        actor = {"sub": str(principal)} if actor is None else {"sub": str(principal), "act": actor}
    return actor


def verify_grant(
    token: object, verifier: GrantVerifier, now_ms: int, leeway_ms: int = 0
) -> GrantClaims:
    """The claims of a grant that verifies at ``now_ms``, or `UnauthenticatedError`."""
    if type(leeway_ms) is not int or not 0 <= leeway_ms <= MAX_LEEWAY_MS:
        raise InvalidRequestError(f"leeway_ms must be an integer in [0, {MAX_LEEWAY_MS}]")
    check_time_ms(now_ms, "now_ms")
    _check_token_shape(token)
    assert isinstance(token, str)
    payload = _verified_payload(token, verifier)
    try:
        claims = _parse_claims(payload)
    except InvalidRequestError as e:
        raise GrantError(f"grant claims are invalid: {e.message}") from e
    _check_claims(claims, verifier, now_ms, leeway_ms)
    return claims


class VerifiedGrants:
    """`verify_grant` that checks each token's signature once: a token that verified
    is remembered (the newest ``size``), and a later use runs only the claim and
    time checks. Safe to share between threads."""

    def __init__(self, verifier: GrantVerifier, size: int = 4096) -> None:
        self.verifier = verifier
        self._size = size
        self._seen: OrderedDict[str, GrantClaims] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: object, now_ms: int) -> GrantClaims:
        """`verify_grant` at ``now_ms`` with no leeway."""
        claims = self._signed(token, now_ms)
        _check_claims(claims, self.verifier, now_ms, 0)
        return claims

    def identify(self, token: object, now_ms: int) -> GrantClaims:
        """The execution a grant names, checked as `verify` does but for ``exp``.

        For the control plane that issued it, a grant identifies its execution;
        what the execution may still do is decided by its stored lease, which
        renewals move past the ``exp`` written into the grant when it was issued.
        The caller must therefore check that the execution is live."""
        claims = self._signed(token, now_ms)
        _check_claims(claims, self.verifier, now_ms, 0, expiry=False)
        return claims

    def _signed(self, token: object, now_ms: int) -> GrantClaims:
        """The claims of a token whose signature verifies (checked once per token)."""
        check_time_ms(now_ms, "now_ms")
        if not isinstance(token, str):
            _check_token_shape(token)  # raises
            raise GrantError("a grant is a string")
        with self._lock:
            claims = self._seen.get(token)
            if claims is not None:
                self._seen.move_to_end(token)
                return claims
        _check_token_shape(token)
        try:
            claims = _parse_claims(_verified_payload(token, self.verifier))
        except InvalidRequestError as e:
            raise GrantError(f"grant claims are invalid: {e.message}") from e
        with self._lock:
            self._seen[token] = claims
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return claims


def _check_token_shape(token: object) -> None:
    if not isinstance(token, str) or len(token) > MAX_GRANT_BYTES:
        raise GrantError(f"a grant is a string of at most {MAX_GRANT_BYTES} bytes")
    if not _TOKEN.fullmatch(token):
        raise GrantError("a grant is three base64url segments joined by '.'")
    try:
        for segment in token.split("."):
            _b64url_decode(segment)  # one spelling per token: no spare trailing bits
    except InvalidRequestError as e:
        raise GrantError("a grant segment is not canonical base64url") from e


def _verified_payload(token: str, verifier: GrantVerifier) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
        _check_header(header, verifier)
        payload: Any = jwt.decode(
            token, verifier.key, algorithms=[ALGORITHM], options=_DECODE_OPTIONS
        )
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as e:  # any PyJWT version
        raise GrantError("grant is malformed or its signature does not verify") from e
    if not isinstance(payload, dict):
        raise GrantError("grant payload is not a JSON object")
    return payload


def _check_header(header: dict[str, Any], verifier: GrantVerifier) -> None:
    if set(header) != _HEADER_KEYS:
        raise GrantError("grant header must hold exactly alg, typ and kid")
    if header["alg"] != ALGORITHM:
        raise GrantError(f"grant must be signed with {ALGORITHM}")
    if header["typ"] != GRANT_TYPE:
        raise GrantError(f"grant typ must be {GRANT_TYPE}")
    if header["kid"] != verifier.key_id:
        raise GrantError("grant is signed by an unknown key")


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"claim {name} must be a non-empty string")
    return value


def _optional_string(payload: Mapping[str, Any], name: str) -> str | None:
    if name not in payload:
        raise InvalidRequestError(f"claim {name} is missing")
    return None if payload[name] is None else _string(payload, name)


def _int(payload: Mapping[str, Any], name: str, maximum: int) -> int:
    value = payload.get(name)
    if type(value) is not int or not 0 <= value <= maximum:
        raise InvalidRequestError(f"claim {name} must be an integer in [0, {maximum}]")
    return value


def _parse_claims(payload: Mapping[str, Any]) -> GrantClaims:
    if "aud" in payload:
        raise InvalidRequestError("grants carry no audience")
    principal = EntityRef.parse(_string(payload, "sub"))
    depth = _int(payload, "depth", MAX_DEPTH_CLAIM)
    return GrantClaims(
        issuer=_string(payload, "iss"),
        principal=principal,
        execution_id=check_execution_id(_string(payload, "jti")),
        issued_at_ms=_int(payload, "iat", _MAX_SECONDS) * 1000,
        not_before_ms=_int(payload, "nbf", _MAX_SECONDS) * 1000,
        expires_at_ms=_int(payload, "exp", _MAX_SECONDS) * 1000,
        action=EntityRef.parse(_string(payload, "action")),
        resource=EntityRef.parse(_string(payload, "resource")),
        parent_id=_optional_id(payload, "parent_id"),
        root_id=check_execution_id(_string(payload, "root_id")),
        depth=depth,
        policy_version=_string(payload, "policy_version"),
        runtime_id=_optional_string(payload, "runtime_id"),
        delegation=(*_ancestors(payload.get("act"), depth), principal),
    )


def _optional_id(payload: Mapping[str, Any], name: str) -> str | None:
    value = _optional_string(payload, name)
    return None if value is None else check_execution_id(value)


def _ancestors(act: object, depth: int) -> tuple[EntityRef, ...]:
    """The ``act`` chain as principals, root first; it must be ``depth`` long."""
    nearest_first: list[EntityRef] = []
    while act is not None and len(nearest_first) < depth:
        if not isinstance(act, dict) or not {"sub"} <= set(act) <= {"sub", "act"}:
            raise InvalidRequestError("claim act must be {sub, act?} objects")
        nearest_first.append(EntityRef.parse(act["sub"]))
        act = act.get("act")
    if act is not None or len(nearest_first) != depth:
        raise InvalidRequestError("claim act does not match depth")
    return tuple(reversed(nearest_first))


def _check_claims(
    claims: GrantClaims, verifier: GrantVerifier, now_ms: int, leeway: int, *, expiry: bool = True
) -> None:
    if claims.issuer != verifier.issuer:
        raise GrantError("grant is from another issuer")
    is_root = claims.parent_id is None
    if (claims.depth == 0) != is_root or (claims.root_id == claims.execution_id) != is_root:
        raise GrantError("grant lineage does not add up")
    if claims.parent_id == claims.execution_id:
        raise GrantError("grant lineage does not add up")
    if not claims.issued_at_ms <= claims.not_before_ms < claims.expires_at_ms:
        raise GrantError("grant times must satisfy iat <= nbf < exp")
    if now_ms + leeway < claims.not_before_ms:
        raise GrantError("grant is not valid yet")
    if expiry and now_ms - leeway >= claims.expires_at_ms:
        raise GrantError("grant has expired")
