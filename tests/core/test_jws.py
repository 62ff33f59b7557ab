"""The signature checker keeps PyJWT's refusals: same segment decoding, same secret checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS

from wsguard.config import JwtConfig
from wsguard.core.auth import TokenVerifier
from wsguard.core.clock import FakeClock
from wsguard.core.jws import SignatureChecker, decode_segment
from wsguard.exceptions import AuthenticationFailed, ConfigurationError

SECRET = b"jws-test-secret-0123456789abcdef0123456789"
NOW = 1_764_400_000.0


def outcome(decoder: object, segment: bytes) -> tuple[str, bytes | str]:
    try:
        return "ok", decoder(segment, "crypto")  # type: ignore[operator]
    except jwt.DecodeError as exc:
        return "refused", str(exc)


# Mostly alphabet bytes, with padding, the standard alphabet's "+/", junk,
# and bytes outside ASCII, so that every branch of both decoders is reached.
segments = st.lists(
    st.sampled_from(list(b"AQgw09az_-") + [ord("="), ord("+"), ord("/"), ord("!"), 0, 0xE9, 10]),
    max_size=24,
).map(bytes)


@settings(max_examples=2000, deadline=None)
@given(segments)
def test_segment_decoding_matches_pyjwt(segment: bytes) -> None:
    assert outcome(decode_segment, segment) == outcome(PyJWS._decode_base64url_segment, segment)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 2))
def test_every_canonical_encoding_decodes_as_pyjwt_does(data: bytes, padding: int) -> None:
    text = base64.urlsafe_b64encode(data).rstrip(b"=")
    padded = text + b"=" * padding
    assert outcome(decode_segment, padded) == outcome(PyJWS._decode_base64url_segment, padded)
    assert outcome(decode_segment, text) == ("ok", data)


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("prefix", [b"", b"A", b"AA", b"Zm9v", b"Zm9vY", b"Zm9vYm"])
def test_every_last_character_is_judged_as_pyjwt_does(prefix: bytes) -> None:
    """Stray trailing bits are found from the last character: all 64 are tried
    after groups of every length, against PyJWT's decode-and-encode-again."""
    for last in _ALPHABET:
        segment = prefix + bytes([last])
        expected = outcome(PyJWS._decode_base64url_segment, segment)
        assert outcome(decode_segment, segment) == expected, segment


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(payload: dict[str, object], key: bytes = SECRET) -> tuple[str, str]:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(payload).encode())
    signing_input = f"{header}.{body}"
    return signing_input, b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


CLAIMS = {"sub": "alice", "roles": ["user"], "iat": int(NOW), "exp": int(NOW) + 600}


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(JwtConfig(secret=SECRET.decode()), FakeClock(NOW))


@pytest.mark.parametrize(
    "mangle",
    [
        # The GHSA-hxm8-2xgr-2p9m shape: junk that a lax base64 decoder skips.
        lambda sig: sig[:8] + "!!!!" + sig[8:],
        lambda sig: sig + "====",
        lambda sig: sig + "=",  # padding on a length that is not a multiple of four
        # Stray trailing bits: decodes to the same signature, but not canonical.
        lambda sig: sig[:-1] + ("B" if sig[-1] == "A" else chr(ord(sig[-1]) ^ 1)),
        lambda sig: sig + "A",
    ],
)
def test_mangled_signature_is_refused_and_the_real_one_passes(
    verifier: TokenVerifier, mangle: object
) -> None:
    signing_input, signature = signed({**CLAIMS, "jti": "a"})
    forged = f"{signing_input}.{mangle(signature)}"  # type: ignore[operator]
    with pytest.raises(AuthenticationFailed):
        verifier.verify(forged)
    assert verifier.verify(f"{signing_input}.{signature}").subject == "alice"


def test_padding_that_pyjwt_accepts_is_still_refused(verifier: TokenVerifier) -> None:
    # RFC 7515 compact tokens carry no padding; the shape check is stricter than PyJWT.
    signing_input, signature = signed({**CLAIMS, "jti": "b"})
    padded = signature + "=" * (-len(signature) % 4)
    assert padded != signature
    token = f"{signing_input}.{padded}"
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    with pytest.raises(AuthenticationFailed, match="malformed token"):
        verifier.verify(token)
    assert verifier.verify(f"{signing_input}.{signature}").subject == "alice"


def test_another_key_is_refused(verifier: TokenVerifier) -> None:
    signing_input, signature = signed(CLAIMS, key=SECRET + b"x")
    with pytest.raises(AuthenticationFailed, match="bad signature"):
        verifier.verify(f"{signing_input}.{signature}")


def test_a_jwk_is_refused_as_an_hmac_secret() -> None:
    jwk = json.dumps({"kty": "oct", "k": b64url(SECRET)})
    with pytest.raises(ConfigurationError, match="jwt.secret"):
        TokenVerifier(JwtConfig(secret=jwk), FakeClock(NOW))
    with pytest.raises(jwt.InvalidKeyError):
        SignatureChecker(["HS256"], jwk.encode())


def test_payload_must_be_a_json_object() -> None:
    checker = SignatureChecker(["HS256"], SECRET)
    header = b64url(b'{"alg":"HS256"}')
    for body in (b"[1]", b"not json"):
        signing_input = f"{header}.{b64url(body)}"
        sig = b64url(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())
        with pytest.raises(jwt.DecodeError, match="Invalid payload string"):
            checker.payload(f"{signing_input}.{sig}")
    signing_input, signature = signed(CLAIMS)
    assert checker.payload(f"{signing_input}.{signature}") == CLAIMS


HS256_HEADER = b64url(b'{"alg":"HS256"}')


def _signed_payload(checker: SignatureChecker, body: bytes) -> str:
    signing_input = f"{HS256_HEADER}.{b64url(body)}"
    sig = b64url(hmac.new(SECRET, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{sig}"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.booleans())
def test_payload_reads_valid_json_as_json_loads_does(
    payload: dict[str, object], ascii: bool
) -> None:
    """Every valid UTF-8 JSON object reads the same as with json.loads."""
    checker = SignatureChecker(["HS256"], SECRET)
    body = json.dumps(payload, ensure_ascii=ascii).encode()
    assert checker.payload(_signed_payload(checker, body)) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"sub":"a","exp":NaN}',
        b'{"sub":"a","exp":Infinity}',
        b'{"sub":"a","exp":-Infinity}',
        b'{"sub":"a","exp":1e400}',
        b'\xef\xbb\xbf{"sub":"a"}',  # a BOM
        b'{"sub":"\\ud800"}',  # an escaped lone surrogate
        b'{"sub":"\xed\xa0\x80"}',  # an encoded one
        '{"sub":"a"}'.encode("utf-16"),
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
)
def test_payload_json_outside_strict_json_is_refused(body: bytes) -> None:
    """What json.loads would let through but strict JSON forbids is malformed."""
    checker = SignatureChecker(["HS256"], SECRET)
    with pytest.raises(jwt.DecodeError, match="Invalid payload string"):
        checker.payload(_signed_payload(checker, body))
    assert checker.payload(_signed_payload(checker, b'{"sub":"a"}')) == {"sub": "a"}


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["HS256", "HS384", "HS512"]))
def test_the_kept_hmac_state_signs_as_hmac_new(message: bytes, alg: str) -> None:
    checker = SignatureChecker([alg], SECRET)
    algorithm = checker.get_algorithm_by_name(alg)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    prepared = algorithm.prepare_key(SECRET)
    assert algorithm.sign(message, prepared) == hmac.new(SECRET, message, digest).digest()
    other = SECRET + b"-other"
    assert algorithm.sign(message, other) == hmac.new(other, message, digest).digest()
    plain = HMACAlgorithm(digest)
    assert algorithm.check_key_length(prepared) == plain.check_key_length(prepared)
    assert algorithm.check_key_length(b"short") == plain.check_key_length(b"short") is not None
