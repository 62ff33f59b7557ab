"""JWT verification: the attacks are performed and must fail; good tokens still pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from wsguard.config import JwtConfig
from wsguard.core.auth import MAX_TOKEN_LENGTH, Claims, TokenVerifier, issue_token
from wsguard.core.clock import FakeClock
from wsguard.exceptions import AuthenticationFailed, ConfigurationError

SECRET = "auth-test-secret-0123456789abcdef0123456789"
NOW = 1_764_400_000.0

# Every reason verify may give: fixed texts, so none can carry client data.
KNOWN_REASONS = {
    "no token",
    "token too long",
    "malformed token",
    "algorithm not allowed",
    "bad signature",
    "invalid token",
    "missing exp",
    "bad exp",
    "expired",
    "bad nbf",
    "not yet valid",
    "bad iat",
    "issued in the future",
    "missing sub",
    "sub too long",
    "wrong issuer",
    "wrong audience",
    "roles must be a list of strings",
    "role name too long",
    "bad jti",
}

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


# Helpers: tokens built by hand, so that PyJWT's own refusals do not hide ours.


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs_token(
    payload: dict[str, Any],
    key: bytes = SECRET.encode(),
    alg: str = "HS256",
    header: dict[str, Any] | None = None,
) -> str:
    """An HMAC-signed token built without PyJWT (so any key, even a PEM, works)."""
    signing_input = f"{segment(header or {'alg': alg, 'typ': 'JWT'})}.{segment(payload)}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "sub": "alice",
        "roles": ["user"],
        "iat": int(NOW),
        "exp": int(NOW) + 600,
        "jti": "id-1",
    }
    for name, value in overrides.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode("ascii")


def failure(verifier: TokenVerifier, token: str) -> str:
    """Verify ``token``, expect AuthenticationFailed, and return its reason."""
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(token)
    reason = str(info.value)
    assert reason in KNOWN_REASONS
    assert info.value.reason == reason
    return reason


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def verifier(clock: FakeClock) -> TokenVerifier:
    return TokenVerifier(JwtConfig(secret=SECRET), clock)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# Good tokens.


def test_valid_hs256_token(verifier: TokenVerifier) -> None:
    result = verifier.verify(hs_token(claims()))
    assert result == Claims(
        subject="alice",
        roles=frozenset({"user"}),
        expires_at=NOW + 600,
        issued_at=NOW,
        token_id="id-1",
    )


def test_token_signed_by_pyjwt_verifies(verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(roles=["user", "admin"]), SECRET, algorithm="HS256")
    assert verifier.verify(token).roles == frozenset({"user", "admin"})


def test_optional_claims_may_be_absent(verifier: TokenVerifier) -> None:
    result = verifier.verify(hs_token(claims(roles=None, iat=None, jti=None)))
    assert result.roles == frozenset()
    assert result.issued_at is None
    assert result.token_id is None


def test_custom_roles_claim(clock: FakeClock) -> None:
    verifier = TokenVerifier(JwtConfig(secret=SECRET, roles_claim="perms"), clock)
    token = hs_token(claims(roles=None, perms=["read", "write"]))
    assert verifier.verify(token).roles == frozenset({"read", "write"})


def test_every_configured_hmac_algorithm_is_accepted(clock: FakeClock) -> None:
    secret = "k" * 64  # HS512 needs 64 bytes
    verifier = TokenVerifier(JwtConfig(algorithms=("HS256", "HS512"), secret=secret), clock)
    for alg in ("HS256", "HS512"):
        assert verifier.verify(hs_token(claims(), secret.encode(), alg)).subject == "alice"


# Garbage and tampering.


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "..",
        ".payload.sig",
        "header..sig",
        "a b.c.d",
        "abc+def.ghi/jkl.mno=",
        "héader.payload.sig",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig\n",
        segment({"alg": "HS256"}) + ".bm90IGpzb24.c2ln",  # payload is not JSON
        b64url(b"not json") + "." + segment(claims()) + ".c2ln",
        segment(["alg", "HS256"]) + "." + segment(claims()) + ".c2ln",  # header not an object
        b64url(b"[" * 2000 + b"]" * 2000) + "." + segment(claims()) + ".c2ln",  # deep nesting
        b64url(b"x") + "." + segment(claims()) + ".c2ln",  # bad base64 padding length
        segment({"alg": "HS256", "b64": False, "crit": ["b64"]}) + "." + segment(claims()) + ".x",
        segment({"alg": "HS256", "crit": ["exp"]}) + "." + segment(claims()) + ".c2ln",
        segment({"alg": "HS256", "kid": 7}) + "." + segment(claims()) + ".c2ln",
    ],
)
def test_garbage_is_refused(verifier: TokenVerifier, token: str) -> None:
    failure(verifier, token)


def test_non_string_token_is_refused(verifier: TokenVerifier) -> None:
    bad: Any = hs_token(claims()).encode()
    assert failure(verifier, bad) == "no token"


def test_overlong_token_is_refused_before_parsing(verifier: TokenVerifier) -> None:
    padding = "x" * MAX_TOKEN_LENGTH
    token = hs_token(claims(pad=padding))
    assert len(token) > MAX_TOKEN_LENGTH
    assert failure(verifier, token) == "token too long"


def test_tampered_payload_is_refused(verifier: TokenVerifier) -> None:
    header, _, signature = hs_token(claims()).split(".")
    forged = f"{header}.{segment(claims(sub='admin', roles=['admin']))}.{signature}"
    assert failure(verifier, forged) == "bad signature"


def test_tampered_signature_is_refused(verifier: TokenVerifier) -> None:
    header, payload, signature = hs_token(claims()).split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert failure(verifier, f"{header}.{payload}.{flipped}") == "bad signature"
    assert failure(verifier, f"{header}.{payload}.") == "bad signature"


def test_wrong_secret_is_refused(verifier: TokenVerifier) -> None:
    token = hs_token(claims(), key=b"another-secret-0123456789abcdef0123456789")
    assert failure(verifier, token) == "bad signature"


# Time.


def test_expiry_edge_with_leeway(clock: FakeClock) -> None:
    verifier = TokenVerifier(JwtConfig(secret=SECRET, leeway=5), clock)
    token = hs_token(claims(exp=int(NOW) + 60))
    clock.advance(65)  # exactly exp + leeway: still valid
    assert verifier.verify(token).subject == "alice"
    clock.advance(0.001)
    assert failure(verifier, token) == "expired"


def test_expiry_edge_without_leeway(verifier: TokenVerifier, clock: FakeClock) -> None:
    token = hs_token(claims(exp=int(NOW) + 60))
    clock.advance(60)
    assert verifier.verify(token).expires_at == NOW + 60
    clock.advance(1)
    assert failure(verifier, token) == "expired"


def test_not_yet_valid(clock: FakeClock) -> None:
    verifier = TokenVerifier(JwtConfig(secret=SECRET, leeway=5), clock)
    token = hs_token(claims(nbf=int(NOW) + 30))
    assert failure(verifier, token) == "not yet valid"
    clock.advance(24.999)
    assert failure(verifier, token) == "not yet valid"
    clock.advance(0.001)  # now + leeway == nbf
    assert verifier.verify(token).subject == "alice"


def test_issued_in_the_future(clock: FakeClock) -> None:
    verifier = TokenVerifier(JwtConfig(secret=SECRET, leeway=10), clock)
    assert failure(verifier, hs_token(claims(iat=int(NOW) + 11))) == "issued in the future"
    assert verifier.verify(hs_token(claims(iat=int(NOW) + 10))).issued_at == NOW + 10


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": None}, "missing exp"),
        ({"exp": "9999999999"}, "bad exp"),
        ({"exp": True}, "bad exp"),
        ({"exp": [int(NOW) + 600]}, "bad exp"),
        ({"exp": 10**400}, "bad exp"),
        ({"nbf": "0"}, "bad nbf"),
        ({"iat": "yesterday"}, "bad iat"),
        ({"iat": False}, "bad iat"),
    ],
)
def test_bad_time_claims(verifier: TokenVerifier, overrides: dict[str, Any], reason: str) -> None:
    assert failure(verifier, hs_token(claims(**overrides))) == reason


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_exp_is_refused(verifier: TokenVerifier, value: str) -> None:
    # Python's JSON parser reads these; NaN would compare as "never expired".
    # The payload is read as strict JSON, where they are not numbers at all.
    payload = json.dumps(claims(exp=None)).replace("}", f', "exp": {value}}}')
    signing_input = f"{segment({'alg': 'HS256'})}.{b64url(payload.encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    assert failure(verifier, f"{signing_input}.{b64url(signature)}") == "malformed token"
    assert verifier.verify(hs_token(claims())).subject


# Algorithm attacks.


def none_token(alg: str, signature: str = "") -> str:
    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims(sub='admin'))}.{signature}"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2ln"])
def test_alg_none_is_refused(verifier: TokenVerifier, alg: str, signature: str) -> None:
    assert failure(verifier, none_token(alg, signature)) == "algorithm not allowed"


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"alg": ""},
        {"alg": None},
        {"alg": ["HS256"]},
        {"alg": "hs256"},
        {"alg": "HS512"},
        {"alg": "RS256"},
    ],
)
def test_alg_off_the_list_is_refused(verifier: TokenVerifier, header: dict[str, Any]) -> None:
    token = hs_token(claims(), key=("k" * 64).encode(), alg="HS512", header=header)
    assert failure(verifier, token) == "algorithm not allowed"


def test_hs512_signed_with_the_secret_is_refused_by_hs256_config(verifier: TokenVerifier) -> None:
    token = hs_token(claims(), key=SECRET.encode(), alg="HS512")
    assert failure(verifier, token) == "algorithm not allowed"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_key_confusion_is_refused(clock: FakeClock, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    pem = public_pem(rsa_key)
    verifier = TokenVerifier(JwtConfig(algorithms=("RS256",), public_key=pem), clock)
    # The attacker knows the public key and uses it as the HMAC secret.
    for secret in (pem, pem.strip()):
        token = hs_token(claims(sub="admin", roles=["admin"]), key=secret.encode(), alg=alg)
        assert failure(verifier, token) == "algorithm not allowed"


def test_config_cannot_mix_hmac_and_public_key_algorithms(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError) as info:
        JwtConfig(algorithms=("RS256", "HS256"), secret=SECRET, public_key=public_pem(rsa_key))
    assert info.value.setting == "jwt.algorithms"


def test_pem_is_refused_as_hmac_secret(clock: FakeClock, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(JwtConfig(secret=public_pem(rsa_key)), clock)
    assert info.value.setting == "jwt.secret"


@pytest.mark.parametrize(("alg", "length"), [("HS256", 31), ("HS384", 47), ("HS512", 63)])
def test_short_hmac_secret_is_refused(clock: FakeClock, alg: str, length: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(JwtConfig(algorithms=(alg,), secret="s" * length), clock)
    assert info.value.setting == "jwt.secret"
    TokenVerifier(JwtConfig(algorithms=(alg,), secret="s" * (length + 1)), clock)


# Public-key algorithms.

KEY_MAKERS: dict[str, Callable[[], PrivateKey]] = {
    "PS256": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("alg", ["RS256", *KEY_MAKERS])
def test_public_key_happy_path(clock: FakeClock, rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    key = rsa_key if alg == "RS256" else KEY_MAKERS[alg]()
    config = JwtConfig(algorithms=(alg,), public_key=public_pem(key))
    verifier = TokenVerifier(config, clock)
    token = issue_token(config, "bob", ["user"], 300, clock.now(), private_key=private_pem(key))
    assert jwt.get_unverified_header(token)["alg"] == alg
    result = verifier.verify(token)
    assert (result.subject, result.roles, result.expires_at) == (
        "bob",
        frozenset({"user"}),
        NOW + 300,
    )

    # The same token signed by another key of the same kind must fail.
    other = KEY_MAKERS.get(alg, KEY_MAKERS["PS256"])()
    forged = issue_token(config, "bob", ["admin"], 300, clock.now(), private_key=private_pem(other))
    assert failure(verifier, forged) == "bad signature"


def test_ed448_happy_path(clock: FakeClock) -> None:
    key = ed448.Ed448PrivateKey.generate()
    config = JwtConfig(algorithms=("EdDSA",), public_key=public_pem(key))
    token = issue_token(config, "carol", [], 60, clock.now(), private_key=private_pem(key))
    assert TokenVerifier(config, clock).verify(token).subject == "carol"


def test_rs256_token_is_refused_by_es256_config(
    clock: FakeClock, rsa_key: rsa.RSAPrivateKey
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    es_config = JwtConfig(algorithms=("ES256",), public_key=public_pem(ec_key))
    rs_config = JwtConfig(algorithms=("RS256",), public_key=public_pem(rsa_key))
    token = issue_token(rs_config, "bob", [], 60, clock.now(), private_key=private_pem(rsa_key))
    assert failure(TokenVerifier(es_config, clock), token) == "algorithm not allowed"


@pytest.mark.parametrize(
    "pem",
    [
        "not a pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
    ],
)
def test_bad_pem_is_a_configuration_error(clock: FakeClock, pem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(JwtConfig(algorithms=("RS256",), public_key=pem), clock)
    assert info.value.setting == "jwt.public_key"


def test_private_key_pem_is_not_a_public_key(clock: FakeClock, rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(JwtConfig(algorithms=("RS256",), public_key=private_pem(rsa_key)), clock)
    assert info.value.setting == "jwt.public_key"


@pytest.mark.parametrize(
    ("algorithms", "make_key"),
    [
        (("ES256",), lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        (("RS256",), lambda: ec.generate_private_key(ec.SECP256R1())),
        (("PS256",), ed25519.Ed25519PrivateKey.generate),
        (("EdDSA",), lambda: ec.generate_private_key(ec.SECP256R1())),
        (("ES256",), lambda: ec.generate_private_key(ec.SECP384R1())),  # wrong curve
        (("ES256", "ES384"), lambda: ec.generate_private_key(ec.SECP256R1())),
        (("RS256",), lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    ],
)
def test_key_that_does_not_fit_is_a_configuration_error(
    clock: FakeClock, algorithms: tuple[str, ...], make_key: Callable[[], PrivateKey]
) -> None:
    config = JwtConfig(algorithms=algorithms, public_key=public_pem(make_key()))
    with pytest.raises(ConfigurationError) as info:
        TokenVerifier(config, clock)
    assert info.value.setting == "jwt.public_key"


@pytest.mark.parametrize("leeway", [60.001, 61, 3600, -1])
def test_leeway_out_of_range_is_refused(leeway: float) -> None:
    with pytest.raises(ConfigurationError) as info:
        JwtConfig(secret=SECRET, leeway=leeway)
    assert info.value.setting == "jwt.leeway"


# Claims.

AUDIENCE = "wsguard"
ISSUER = "https://auth.example"


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({"aud": "wsguard", "iss": "https://auth.example"}, True),
        ({"aud": ["other", "wsguard"], "iss": "https://auth.example"}, True),
        ({"aud": "other", "iss": "https://auth.example"}, False),
        ({"aud": ["other"], "iss": "https://auth.example"}, False),
        ({"aud": ["wsguard", 1], "iss": "https://auth.example"}, False),
        ({"aud": {"wsguard": 1}, "iss": "https://auth.example"}, False),
        ({"aud": "wsguardx", "iss": "https://auth.example"}, False),
        ({"iss": "https://auth.example"}, False),  # missing aud
        ({"aud": "wsguard", "iss": "https://evil.example"}, False),
        ({"aud": "wsguard", "iss": ["https://auth.example"]}, False),
        ({"aud": "wsguard"}, False),  # missing iss
    ],
)
def test_audience_and_issuer(clock: FakeClock, overrides: dict[str, Any], accepted: bool) -> None:
    verifier = TokenVerifier(JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER), clock)
    token = hs_token(claims(**overrides))
    if accepted:
        assert verifier.verify(token).subject == "alice"
    else:
        assert failure(verifier, token) in {"wrong audience", "wrong issuer"}


def test_aud_and_iss_ignored_when_not_configured(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs_token(claims(aud="anyone", iss="anywhere"))).subject == "alice"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"sub": None}, "missing sub"),
        ({"sub": ""}, "missing sub"),
        ({"sub": 42}, "missing sub"),
        ({"sub": ["alice"]}, "missing sub"),
        ({"sub": "a" * 257}, "sub too long"),
        ({"roles": "admin"}, "roles must be a list of strings"),
        ({"roles": {"admin": True}}, "roles must be a list of strings"),
        ({"roles": ["user", 1]}, "roles must be a list of strings"),
        ({"roles": ["user", ["admin"]]}, "roles must be a list of strings"),
        ({"roles": ["r" * 65]}, "role name too long"),
        ({"jti": 7}, "bad jti"),
        ({"jti": ["id"]}, "bad jti"),
    ],
)
def test_bad_claims(verifier: TokenVerifier, overrides: dict[str, Any], reason: str) -> None:
    assert failure(verifier, hs_token(claims(**overrides))) == reason


def test_claim_limits_are_inclusive(verifier: TokenVerifier) -> None:
    result = verifier.verify(hs_token(claims(sub="a" * 256, roles=["r" * 64])))
    assert result.subject == "a" * 256
    assert result.roles == frozenset({"r" * 64})


# The reason is for the log: it must never carry the token or client data.


def test_reason_never_contains_the_token(verifier: TokenVerifier, clock: FakeClock) -> None:
    marker = "SECRETMARKER"
    bad_tokens = [
        hs_token(claims(sub=marker), key=b"wrong-secret-0123456789abcdef0123456789"),
        hs_token(claims(sub=marker, exp=int(NOW) - 1)),
        hs_token(claims(sub=marker * 30)),
        hs_token(claims(roles=[marker * 10])),
        hs_token(claims(roles=marker)),
        hs_token(claims(jti={"x": marker})),
        hs_token(claims(), header={"alg": marker}),
        none_token("none"),
        marker + "." + marker + "." + marker,
        f"{segment({'alg': 'HS256'})}.{b64url(marker.encode())}.c2ln",
    ]
    for token in bad_tokens:
        with pytest.raises(AuthenticationFailed) as info:
            verifier.verify(token)
        text = f"{info.value} {info.value.reason!r} {info.value.args!r}"
        assert token not in text
        for part in token.split("."):
            assert not part or part not in text
        assert marker not in text
        # Chained exceptions would put PyJWT's message in the log's traceback.
        assert info.value.__cause__ is None
        assert info.value.__context__ is None or info.value.__suppress_context__


# issue_token.


def test_issue_token_round_trip(clock: FakeClock) -> None:
    config = JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)
    token = issue_token(config, "dave", ["user", "admin"], 120, clock.now())
    result = TokenVerifier(config, clock).verify(token)
    assert result.subject == "dave"
    assert result.roles == frozenset({"user", "admin"})
    assert result.expires_at == NOW + 120
    assert result.issued_at == NOW
    assert result.token_id is not None and len(result.token_id) >= 21  # 16 random bytes

    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["iss"] == ISSUER
    assert payload["aud"] == AUDIENCE
    assert payload["iat"] == int(NOW) and isinstance(payload["iat"], int)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_issue_token_ids_are_random(clock: FakeClock) -> None:
    config = JwtConfig(secret=SECRET)
    verifier = TokenVerifier(config, clock)
    ids = {verifier.verify(issue_token(config, "e", [], 60, NOW)).token_id for _ in range(20)}
    assert len(ids) == 20


def test_issue_token_expiry_and_not_before(clock: FakeClock) -> None:
    config = JwtConfig(secret=SECRET)
    verifier = TokenVerifier(config, clock)
    later = issue_token(config, "f", [], 600, NOW, not_before=NOW + 60)
    assert failure(verifier, later) == "not yet valid"
    expired = issue_token(config, "f", [], 60, NOW - 61)
    assert failure(verifier, expired) == "expired"
    clock.advance(60)
    assert verifier.verify(later).subject == "f"


def test_issue_token_extra_claims(clock: FakeClock) -> None:
    config = JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)
    verifier = TokenVerifier(config, clock)
    token = issue_token(config, "g", [], 60, NOW, extra_claims={"tenant": "t1"})
    assert jwt.decode(token, options={"verify_signature": False})["tenant"] == "t1"
    assert verifier.verify(token).subject == "g"
    wrong = issue_token(config, "g", [], 60, NOW, extra_claims={"aud": "other"})
    assert failure(verifier, wrong) == "wrong audience"


def test_issue_token_signs_with_the_first_algorithm(clock: FakeClock) -> None:
    secret = "k" * 64
    config = JwtConfig(algorithms=("HS512", "HS256"), secret=secret)
    token = issue_token(config, "h", [], 60, NOW)
    assert jwt.get_unverified_header(token)["alg"] == "HS512"
    assert TokenVerifier(config, clock).verify(token).subject == "h"


def test_issue_token_needs_a_fitting_private_key(rsa_key: rsa.RSAPrivateKey) -> None:
    config = JwtConfig(algorithms=("RS256",), public_key=public_pem(rsa_key))
    with pytest.raises(ConfigurationError) as info:
        issue_token(config, "i", [], 60, NOW)
    assert info.value.setting == "private_key"
    for bad in (
        "not a pem",
        public_pem(rsa_key),
        private_pem(ec.generate_private_key(ec.SECP256R1())),
    ):
        with pytest.raises(ConfigurationError) as info:
            issue_token(config, "i", [], 60, NOW, private_key=bad)
        assert info.value.setting == "private_key"
        assert "PRIVATE KEY" not in str(info.value)


def test_verified_cache_honours_expiry_and_never_caches_failures() -> None:
    """A reconnect with a held token skips the signature check, but not the clock or a bad token."""
    from wsguard.core.auth import TokenVerifier, issue_token
    from wsguard.core.clock import FakeClock

    clock = FakeClock()
    config = JwtConfig(secret="c" * 40)
    verifier = TokenVerifier(config, clock)
    token = issue_token(config, "alice", ["user"], 60, clock.now())
    assert verifier.verify(token).subject == "alice"
    assert verifier.verify(token).subject == "alice"  # from the cache
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}AA"
    for _ in range(2):  # a refused token is not remembered
        with pytest.raises(AuthenticationFailed, match="signature|malformed"):
            verifier.verify(forged)
    clock.advance(61)
    with pytest.raises(AuthenticationFailed, match="expired"):
        verifier.verify(token)


def test_a_cached_token_is_still_refused_before_its_nbf() -> None:
    """A token with nbf is cached with it: a reconnect before nbf is refused, after it served."""
    clock = FakeClock(NOW)
    config = JwtConfig(secret="c" * 40)
    verifier = TokenVerifier(config, clock)
    token = issue_token(config, "bob", ["user"], 600, NOW, extra_claims={"nbf": int(NOW) + 1})
    clock.advance(1.0)
    assert verifier.verify(token).subject == "bob"  # verified, and now cached
    clock.advance(-200.0)  # the clock stepped back: before nbf again, beyond the leeway
    with pytest.raises(AuthenticationFailed, match="not yet valid"):
        verifier.verify(token)
    clock.advance(200.0)
    assert verifier.verify(token).subject == "bob"


def test_the_cache_holds_nothing_for_the_garbage_collector_to_walk() -> None:
    """Cached tokens are plain tuples the collector stops tracking; hits give the same claims."""
    import gc

    from wsguard.core import auth

    clock = FakeClock(NOW)
    config = JwtConfig(secret="c" * 40)
    verifier = TokenVerifier(config, clock)
    tokens = [issue_token(config, f"u{i}", ["user", "chat"], 600, NOW) for i in range(2000)]
    gc.collect()
    before = len(gc.get_objects())
    first = [verifier.verify(t) for t in tokens]
    roles = first[0].roles
    del first
    gc.collect()
    assert len(gc.get_objects()) - before < 50  # not one object per cached token
    hits = [verifier.verify(t) for t in tokens]
    assert [c.subject for c in hits] == [f"u{i}" for i in range(2000)]
    assert all(c.roles is roles for c in hits)  # one shared set
    assert hits[0] == Claims("u0", frozenset({"user", "chat"}), NOW + 600, NOW, hits[0].token_id)
    # Distinct role lists beyond the bound still verify; they are not cached.
    count = auth.MAX_SHARED_ROLE_SETS + 5
    many = [issue_token(config, "v", [f"r{i}"], 600, NOW) for i in range(count)]
    for _ in range(2):
        assert [verifier.verify(t).roles for t in many] == [
            frozenset({f"r{i}"}) for i in range(count)
        ]
