"""Grants: round trips, RFC 8037/7638 vectors, every tampering refused, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core import lease, lineage
from lictor.core.grant import (
    GRANT_TYPE,
    MAX_GRANT_BYTES,
    GrantClaims,
    GrantSigner,
    GrantVerifier,
    VerifiedGrants,
    grant_claims,
    jwk_thumbprint,
    verify_grant,
)
from lictor.core.types import EntityRef, Execution, new_execution_id
from lictor.errors import (
    GrantError,
    InvalidRequestError,
    InvalidTransitionError,
    UnauthenticatedError,
)

T0 = 1_700_000_000_123
SEED = bytes(range(32))
ISSUER = "https://lictor.example"
KID = "grant-key-1"
SIGNER = GrantSigner(SEED, KID, ISSUER)
VERIFIER = SIGNER.verifier
PRIVATE = Ed25519PrivateKey.from_private_bytes(SEED)
PLANNER, TOOL, SHELL = (EntityRef("Agent", n) for n in ("planner-7", "tool-1", "shell-2"))
DEPLOY, PAYMENTS = EntityRef("Action", "deploy"), EntityRef("Service", "payments")


def eid(n: int) -> str:
    return new_execution_id(0, n.to_bytes(10, "big"))


def active(n: int, principal: EntityRef, parent: Execution | None = None) -> Execution:
    lin = (
        lineage.root_lineage(eid(n), principal)
        if parent is None
        else lineage.child_fields(parent, principal)
    )
    ex = lease.request(
        execution_id=eid(n), principal=principal, action=DEPLOY, resource=PAYMENTS,
        context={}, runtime_id="rt-1", lineage=lin, now_ms=T0,
    )  # fmt: skip
    return lease.activate(ex, T0, "pv-abc", 60_000, parent)


ROOT = active(1, PLANNER)
CHILD = active(2, TOOL, ROOT)
GRANDCHILD = active(3, SHELL, CHILD)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def raw_payload(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return payload


def sign_raw(payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """Sign arbitrary claims with the trusted key, the way an attacker with a bug might."""
    head = {"alg": "EdDSA", "typ": GRANT_TYPE, "kid": KID} if header is None else header
    signing_input = f"{b64json(head)}.{b64json(payload)}"
    return f"{signing_input}.{b64(PRIVATE.sign(signing_input.encode()))}"


def refused(
    token: object, now: int = T0, verifier: GrantVerifier = VERIFIER, leeway: int = 0
) -> None:
    with pytest.raises(UnauthenticatedError):
        verify_grant(token, verifier, now, leeway)


# ---- round trips


def test_root_grant_round_trip() -> None:
    claims = verify_grant(SIGNER.sign(ROOT, T0), VERIFIER, T0)
    assert claims == GrantClaims(
        issuer=ISSUER, principal=PLANNER, execution_id=ROOT.id,
        issued_at_ms=1_700_000_000_000, not_before_ms=1_700_000_000_000,
        expires_at_ms=1_700_000_060_000, action=DEPLOY, resource=PAYMENTS,
        parent_id=None, root_id=ROOT.id, depth=0, policy_version="pv-abc",
        runtime_id="rt-1", delegation=(PLANNER,),
    )  # fmt: skip


def test_grant_header_and_raw_claims() -> None:
    token = SIGNER.sign(GRANDCHILD, T0)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": GRANT_TYPE, "kid": KID}
    payload = raw_payload(token)
    assert payload["sub"] == 'Agent::"shell-2"'
    assert payload["act"] == {"sub": 'Agent::"tool-1"', "act": {"sub": 'Agent::"planner-7"'}}
    assert (payload["parent_id"], payload["root_id"], payload["depth"]) == (CHILD.id, ROOT.id, 2)
    assert "act" not in raw_payload(SIGNER.sign(ROOT, T0))


def test_child_grant_round_trip() -> None:
    claims = verify_grant(SIGNER.sign(GRANDCHILD, T0), VERIFIER, T0)
    assert claims.delegation == GRANDCHILD.delegation == (PLANNER, TOOL, SHELL)
    assert (claims.parent_id, claims.root_id, claims.depth) == (CHILD.id, ROOT.id, 2)


def test_grant_expiry_never_passes_the_lease() -> None:
    assert ROOT.lease is not None
    claims = verify_grant(SIGNER.sign(ROOT, T0), VERIFIER, T0)
    assert claims.expires_at_ms <= ROOT.lease.expires_at_ms
    assert verify_grant(SIGNER.sign(ROOT, T0), VERIFIER, claims.expires_at_ms - 1)
    refused(SIGNER.sign(ROOT, T0), claims.expires_at_ms)


def test_only_active_executions_get_grants() -> None:
    with pytest.raises(InvalidTransitionError):
        SIGNER.sign(lease.revoke(ROOT, T0, "r"), T0)
    with pytest.raises(InvalidTransitionError):
        SIGNER.sign(ROOT, T0 + 60_000)  # lease passed
    with pytest.raises(InvalidTransitionError):
        grant_claims(ROOT, ISSUER, 1_700_000_060_050)  # lease ends within this second


def test_jwk_round_trip() -> None:
    jwk = VERIFIER.jwk()
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64(VERIFIER.public_key),
        "kid": KID,
        "alg": "EdDSA",
    }
    again = GrantVerifier.from_jwk(json.loads(json.dumps(jwk)), ISSUER)
    assert verify_grant(SIGNER.sign(CHILD, T0), again, T0).execution_id == CHILD.id


RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def test_rfc8037_and_rfc7638_vectors() -> None:
    public = base64.urlsafe_b64decode(RFC8037_X + "=")
    assert jwk_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    verifier = GrantVerifier.from_jwk(
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a"}, "i"
    )
    jws = (
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg"
        "3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    )
    assert (
        jwt.PyJWS().decode(jws, verifier.key, algorithms=["EdDSA"]) == b"Example of Ed25519 signing"
    )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "X25519", "x": RFC8037_X, "kid": "a"},
        {"kty": "EC", "crv": "Ed25519", "x": RFC8037_X, "kid": "a"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X + "=", "kid": "a"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X[:-1] + "p", "kid": "a"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X[:-2], "kid": "a"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a", "d": "secret"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a", "alg": "HS256"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "a", "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": ""},
        {"kty": "OKP", "crv": "Ed25519", "x": 7, "kid": "a"},
    ],
)
def test_bad_jwks_are_refused(jwk: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError):
        GrantVerifier.from_jwk(jwk, ISSUER)


@pytest.mark.parametrize(
    ("seed", "kid", "issuer"),
    [(bytes(31), KID, ISSUER), ("x" * 32, KID, ISSUER), (SEED, "", ISSUER), (SEED, KID, ""),
     (SEED, "k\n", ISSUER), (SEED, KID, "i" * 257), (SEED, 7, ISSUER)],
)  # fmt: skip
def test_bad_signer_arguments(seed: object, kid: object, issuer: object) -> None:
    with pytest.raises(InvalidRequestError):
        GrantSigner(seed, kid, issuer)  # type: ignore[arg-type]


# ---- tampering


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_every_flipped_character_is_refused(segment: int) -> None:
    token = SIGNER.sign(CHILD, T0)
    parts = token.split(".")
    for i in range(len(parts[segment])):
        for replacement in ("A", "B", "_"):
            if parts[segment][i] != replacement:
                flipped = list(parts)
                flipped[segment] = parts[segment][:i] + replacement + parts[segment][i + 1 :]
                refused(".".join(flipped))


def test_alg_none_is_refused() -> None:
    header = {"alg": "none", "typ": GRANT_TYPE, "kid": KID}
    payload = raw_payload(SIGNER.sign(ROOT, T0))
    refused(f"{b64json(header)}.{b64json(payload)}.")
    refused(f"{b64json(header)}.{b64json(payload)}.{b64(b'x' * 64)}")
    refused(sign_raw(payload, header))


@pytest.mark.parametrize(
    "secret", [VERIFIER.public_key, RFC8037_X.encode(), b64(VERIFIER.public_key).encode()]
)
def test_hs256_with_the_public_key_is_refused(secret: bytes) -> None:
    header = b64json({"alg": "HS256", "typ": GRANT_TYPE, "kid": KID})
    signing_input = f"{header}.{b64json(raw_payload(SIGNER.sign(ROOT, T0)))}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    refused(f"{signing_input}.{b64(mac)}")


def test_another_key_with_the_same_kid_is_refused() -> None:
    impostor = GrantSigner(bytes(32), KID, ISSUER)
    refused(impostor.sign(ROOT, T0))


def test_wrong_kid_or_issuer_is_refused() -> None:
    token = SIGNER.sign(ROOT, T0)
    refused(token, verifier=GrantVerifier(VERIFIER.public_key, "other", ISSUER))
    refused(token, verifier=GrantVerifier(VERIFIER.public_key, KID, "https://evil.example"))


def test_expired_and_not_yet_valid() -> None:
    token = SIGNER.sign(ROOT, T0)
    exp, nbf = 1_700_000_060_000, 1_700_000_000_000
    assert verify_grant(token, VERIFIER, exp - 1)
    refused(token, exp)
    assert verify_grant(token, VERIFIER, exp + 4_999, leeway_ms=5_000)
    refused(token, exp + 5_000, leeway=5_000)
    assert verify_grant(token, VERIFIER, nbf)
    refused(token, nbf - 1)
    assert verify_grant(token, VERIFIER, nbf - 2_000, leeway_ms=2_000)


@pytest.mark.parametrize("leeway", [-1, 300_001, 1.0, True])
def test_leeway_is_validated(leeway: object) -> None:
    with pytest.raises(InvalidRequestError):
        verify_grant(SIGNER.sign(ROOT, T0), VERIFIER, T0, leeway)  # type: ignore[arg-type]


REQUIRED = ["iss", "sub", "jti", "iat", "nbf", "exp", "action", "resource", "parent_id",
            "root_id", "depth", "policy_version", "runtime_id"]  # fmt: skip


@pytest.mark.parametrize("claim", [*REQUIRED, "act"])
def test_missing_claims_are_refused(claim: str) -> None:
    payload = raw_payload(SIGNER.sign(CHILD, T0))
    assert verify_grant(sign_raw(payload), VERIFIER, T0)
    del payload[claim]
    refused(sign_raw(payload))


@pytest.mark.parametrize(
    "change",
    [
        {"sub": "planner-7"}, {"sub": {"type": "Agent", "id": "x"}}, {"jti": "ex_nope"},
        {"exp": 1_700_000_060.5}, {"exp": "1700000060"}, {"exp": True}, {"iat": -1},
        {"exp": 10**30}, {"nbf": 1_700_000_060}, {"iat": 1_700_000_001},
        {"depth": 1}, {"depth": 3}, {"depth": "2"}, {"parent_id": None}, {"parent_id": eid(3)},
        {"root_id": eid(3)}, {"action": "deploy"}, {"policy_version": ""}, {"runtime_id": 7},
        {"act": {"sub": 'Agent::"planner-7"'}},
        {"act": {"sub": 'Agent::"x"', "act": {"sub": 'Agent::"y"', "act": {"sub": 'Agent::"z"'}}}},
        {"act": {"sub": 'Agent::"x"', "iss": "y", "act": {"sub": 'Agent::"y"'}}},
        {"act": ['Agent::"x"', 'Agent::"y"']}, {"act": None}, {"aud": ISSUER},
    ],
)  # fmt: skip
def test_mistyped_or_inconsistent_claims_are_refused(change: dict[str, Any]) -> None:
    refused(sign_raw(raw_payload(SIGNER.sign(GRANDCHILD, T0)) | change))


def test_root_lineage_must_add_up() -> None:
    payload = raw_payload(SIGNER.sign(ROOT, T0))
    refused(sign_raw(payload | {"root_id": eid(9)}))
    refused(sign_raw(payload | {"parent_id": ROOT.id}))
    refused(sign_raw(payload | {"depth": 1, "act": {"sub": 'Agent::"x"'}}))


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "typ": GRANT_TYPE},
        {"alg": "EdDSA", "typ": "JWT", "kid": KID},
        {"alg": "EdDSA", "typ": GRANT_TYPE, "kid": KID, "crit": ["exp"]},
        {"alg": "EdDSA", "typ": GRANT_TYPE, "kid": KID, "b64": False, "crit": ["b64"]},
        {"alg": "EdDSA", "typ": GRANT_TYPE, "kid": KID, "jwk": {}},
        {"alg": "ES256", "typ": GRANT_TYPE, "kid": KID},
        ["EdDSA"],
    ],
)
def test_unexpected_headers_are_refused(header: Any) -> None:
    refused(sign_raw(raw_payload(SIGNER.sign(ROOT, T0)), header))


def test_oversize_tokens_are_refused() -> None:
    payload = raw_payload(SIGNER.sign(ROOT, T0))
    padded = sign_raw(payload | {"pad": "x" * 5000})
    assert len(padded) <= MAX_GRANT_BYTES and verify_grant(padded, VERIFIER, T0)
    refused(sign_raw(payload | {"pad": "x" * 6200}))
    refused("a" * (MAX_GRANT_BYTES + 1))


@pytest.mark.parametrize(
    "token",
    [None, b"abc", 7, "", ".", "..", "a.b", "a.b.c.d", "a..c", "a.b.", "é.b.c", "a b.c.d",
     "e30.e30.e30", "bnVsbA.bnVsbA.AAAA", "W10.W10.AAAA", f"{b64json({'alg': 'EdDSA'})}.e30.AAAA",
     "=.=.=", "YQ==.YQ.YQ", "a\n.b.c"],
)  # fmt: skip
def test_garbage_is_refused(token: object) -> None:
    refused(token)


def test_deeply_nested_json_is_refused() -> None:
    refused(f"{b64(b'[' * 3000)}.{b64(b'[' * 3000)}.AAAA")
    nested: dict[str, Any] = {"a": None}
    for _ in range(200):
        nested = {"a": nested}
    refused(sign_raw(raw_payload(SIGNER.sign(ROOT, T0)) | {"act": nested}))


# ---- fuzzing

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


@given(st.text(max_size=400) | st.text(ALPHABET, max_size=400))
def test_random_text_raises_only_unauthenticated(text: str) -> None:
    refused(text)


@given(st.integers(0, 10_000), st.sampled_from(ALPHABET))
def test_random_single_edits_are_refused(position: int, char: str) -> None:
    token = SIGNER.sign(GRANDCHILD, T0)
    position %= len(token)
    if token[position] != char:
        refused(token[:position] + char + token[position + 1 :])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
GOOD = raw_payload(SIGNER.sign(GRANDCHILD, T0))


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([*REQUIRED, "act", "aud"]), JSON, max_size=6))
def test_signed_random_claims_verify_or_are_refused(changes: dict[str, Any]) -> None:
    token = sign_raw(GOOD | changes)
    try:
        claims = verify_grant(token, VERIFIER, T0)
    except UnauthenticatedError:
        return
    assert claims.issuer == ISSUER and len(claims.delegation) == claims.depth + 1


@given(st.dictionaries(st.text(max_size=6), JSON, max_size=5), JSON)
def test_signed_random_headers_and_payloads_are_refused(
    header: dict[str, Any], payload: Any
) -> None:
    refused(sign_raw(payload, header))


def test_a_grant_over_the_size_limit_is_never_signed() -> None:
    """A deep delegation of long principal ids would make a grant no verifier accepts."""
    parent = active(100, EntityRef("Agent", "a" * 500))
    for n in range(101, 117):
        parent = active(n, EntityRef("Agent", chr(ord("a") + n % 26) * 500), parent)
    with pytest.raises(GrantError, match="exceed"):
        SIGNER.sign(parent, T0)
    assert len(SIGNER.sign(active(200, PLANNER), T0)) < MAX_GRANT_BYTES


def test_verified_grants_check_the_signature_once_and_the_time_every_time() -> None:
    grants = VerifiedGrants(VERIFIER, size=2)
    token = SIGNER.sign(ROOT, T0)
    claims = grants.verify(token, T0)
    assert claims == verify_grant(token, VERIFIER, T0)
    assert grants.verify(token, T0 + 1) == claims  # remembered
    with pytest.raises(UnauthenticatedError):
        grants.verify(token, claims.expires_at_ms)  # expiry is still checked on a hit
    other = VerifiedGrants(GrantSigner(bytes(32), KID, ISSUER).verifier)
    with pytest.raises(UnauthenticatedError):
        other.verify(token, T0)  # another key: the signature is checked on a miss
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(UnauthenticatedError):
        grants.verify(forged, T0)
    with pytest.raises(UnauthenticatedError):
        grants.verify(123, T0)
    for n in (4, 5, 6):  # the oldest is forgotten beyond `size`
        grants.verify(SIGNER.sign(active(n, PLANNER), T0), T0)
    assert len(grants._seen) == 2


def test_identify_checks_everything_but_expiry() -> None:
    """`identify` names the execution of a grant past its ``exp`` (its lease decides
    what it may do), and refuses what `verify` refuses for any other reason."""
    grants = VerifiedGrants(VERIFIER)
    token = SIGNER.sign(GRANDCHILD, T0)
    claims = grants.verify(token, T0)
    assert grants.identify(token, claims.expires_at_ms + 3_600_000) == claims
    with pytest.raises(UnauthenticatedError):
        grants.verify(token, claims.expires_at_ms)
    with pytest.raises(UnauthenticatedError):
        grants.identify(token, claims.not_before_ms - 1)  # not valid yet
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(UnauthenticatedError):
        grants.identify(forged, T0)
    other = VerifiedGrants(GrantSigner(bytes(32), KID, "another-issuer").verifier)
    with pytest.raises(UnauthenticatedError):
        other.identify(token, T0)


@given(st.text(max_size=400) | st.text(ALPHABET, max_size=400))
def test_identify_refuses_random_text_cleanly(text: str) -> None:
    with pytest.raises(UnauthenticatedError):
        VerifiedGrants(VERIFIER).identify(text, T0)
