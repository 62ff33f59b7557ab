"""JWT verification and issuing, sans-I/O.

:class:`TokenVerifier` checks a compact JWS token against :class:`JwtConfig`:
the algorithm allow list first (so ``none`` and key confusion are refused before
any signature maths), then the signature through PyJWT
(:class:`~wsguard.core.jws.SignatureChecker`), then every claim rule itself
against the injected :class:`Clock`. PyJWT checks no claim: its time checks
read the system clock, which would make the policy untestable.

Every failure is :exc:`AuthenticationFailed` with a fixed, short reason for the
server log. Reasons never quote the token or a claim value: both come from the
client and may be secrets or log-injection payloads.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypeAlias

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    SECP384R1,
    SECP521R1,
    EllipticCurve,
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from wsguard.config import HMAC_ALGORITHMS, JwtConfig
from wsguard.core.clock import Clock
from wsguard.core.jws import SignatureChecker
from wsguard.exceptions import AuthenticationFailed, ConfigurationError

__all__ = ["Claims", "TokenVerifier", "issue_token"]

MAX_TOKEN_LENGTH = 8192
MAX_SUBJECT_LENGTH = 256
MAX_ROLE_LENGTH = 64
MIN_RSA_BITS = 2048  # NIST SP 800-131A; PyJWT only warns below it

# Header and payload must be non-empty; an empty signature is let through the
# shape check so that an ``alg: none`` token is logged as what it is.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
VERIFIED_CACHE_SIZE = 10_000
"""Verified tokens remembered, so that reconnect storms skip the signature check."""
MAX_SHARED_ROLE_SETS = 1024
"""Distinct role lists remembered for the cache; a token with yet another is not cached."""


_PublicKey: TypeAlias = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey
_PrivateKey: TypeAlias = (
    RSAPrivateKey | EllipticCurvePrivateKey | Ed25519PrivateKey | Ed448PrivateKey
)
_VerifyKey: TypeAlias = bytes | _PublicKey

_EC_CURVES: dict[str, type[EllipticCurve]] = {
    "ES256": SECP256R1,
    "ES384": SECP384R1,
    "ES512": SECP521R1,
}


class Claims(NamedTuple):
    """The claims of a verified token that wsguard uses; immutable.

    A named tuple: built on every fresh token for a third of a frozen
    dataclass's cost.

    Attributes:
        subject: the ``sub`` claim.
        roles: the role names from the configured roles claim; empty when absent.
        expires_at: ``exp``, in seconds since the epoch.
        issued_at: ``iat``, in seconds since the epoch, if present.
        token_id: ``jti``, if present.
    """

    subject: str
    roles: frozenset[str]
    expires_at: float
    issued_at: float | None
    token_id: str | None


# A cached verified token: (subject, index of its role set, expires_at,
# issued_at, token_id, nbf). A plain tuple of plain values, which the garbage
# collector stops tracking (it never untracks a named tuple, a subclass).
_Verified: TypeAlias = tuple[str, int, float, float | None, str | None, float | None]


class TokenVerifier:
    """Verifies tokens against one :class:`JwtConfig`.

    The key is loaded and checked once, here, so that a bad key stops the start
    rather than failing every handshake.

    Args:
        config: the JWT policy.
        clock: the source of "now" for ``exp``, ``nbf`` and ``iat``.

    Raises:
        ConfigurationError: the public key is not a PEM public key or does not
            fit every configured algorithm; or the HMAC secret is shorter than the
            hash (RFC 7518 section 3.2) or looks like an asymmetric key.
    """

    def __init__(self, config: JwtConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._key: _VerifyKey = _load_verify_key(config)
        # SHA-256(token) -> _Verified, the claims of a token whose signature
        # and claims verified. Times are re-checked against the clock on every
        # hit, and revocation is checked by the caller after verify(), so a
        # cached token is never accepted past either. Bounded: the oldest
        # entries go first.
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        # The role sets of cached tokens, each distinct one once (bounded). An
        # entry names its set by index: a tuple of plain values only, which
        # the garbage collector stops tracking. A full cache of (Claims, nbf)
        # pairs had added 30,000 objects for every full collection to walk.
        self._role_index: dict[frozenset[str], int] = {}
        self._role_sets: list[frozenset[str]] = []
        # PyJWT checks the signature only; claims are checked below against the
        # injected clock, where PyJWT would read the system clock.
        self._checker = SignatureChecker(config.algorithms, self._key)

    def verify(self, token: str) -> Claims:
        """Verify ``token`` and return its claims.

        Args:
            token: a compact JWS, as sent by the client.

        Raises:
            AuthenticationFailed: for any failure, with a fixed reason.
        """
        if not isinstance(token, str) or not token:
            raise AuthenticationFailed("no token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationFailed("token too long")
        if not token.isascii():
            raise AuthenticationFailed("malformed token")
        # A cached token matched the shape below when it was verified: a hit
        # skips the regular expression too.
        digest = hashlib.sha256(token.encode()).digest()  # OpenSSL: cheaper than blake2b here
        cached = self._verified.get(digest)
        if cached is not None:
            subject, role_set, expires_at, issued_at, token_id, nbf = cached
            now, leeway = self._clock.now(), self._config.leeway
            if now > expires_at + leeway:
                del self._verified[digest]
                raise AuthenticationFailed("expired")
            if nbf is not None and now + leeway < nbf:
                raise AuthenticationFailed("not yet valid")
            self._verified.move_to_end(digest)
            return Claims(subject, self._role_sets[role_set], expires_at, issued_at, token_id)

        if _COMPACT_JWS.fullmatch(token) is None:
            raise AuthenticationFailed("malformed token")
        # PyJWT checks ``alg`` against the allow list before it touches a key:
        # that refuses ``none`` (any case) and HS* tokens aimed at a public-key
        # config before any signature maths.
        try:
            payload = self._checker.payload(token)
        except jwt.InvalidAlgorithmError:
            raise AuthenticationFailed("algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise AuthenticationFailed("bad signature") from None
        except jwt.DecodeError:
            raise AuthenticationFailed("malformed token") from None
        except jwt.PyJWTError:
            raise AuthenticationFailed("invalid token") from None

        claims = self._check_claims(payload)
        index = self._role_index.get(claims.roles)
        if index is None and len(self._role_sets) < MAX_SHARED_ROLE_SETS:
            index = self._role_index[claims.roles] = len(self._role_sets)
            self._role_sets.append(claims.roles)
        if index is not None:  # else: too many distinct role lists; not cached
            nbf = payload.get("nbf")
            self._verified[digest] = (
                claims.subject,
                index,
                claims.expires_at,
                claims.issued_at,
                claims.token_id,
                None if nbf is None else float(nbf),
            )
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _check_claims(self, payload: dict[str, Any]) -> Claims:
        config = self._config
        now = self._clock.now()
        leeway = config.leeway

        if "exp" not in payload:
            raise AuthenticationFailed("missing exp")
        exp = _number(payload["exp"])
        if exp is None:
            raise AuthenticationFailed("bad exp")
        if now > exp + leeway:
            raise AuthenticationFailed("expired")

        if "nbf" in payload:
            nbf = _number(payload["nbf"])
            if nbf is None:
                raise AuthenticationFailed("bad nbf")
            if now + leeway < nbf:
                raise AuthenticationFailed("not yet valid")

        iat: float | None = None
        if "iat" in payload:
            iat = _number(payload["iat"])
            if iat is None:
                raise AuthenticationFailed("bad iat")
            if iat > now + leeway:
                raise AuthenticationFailed("issued in the future")

        subject = payload.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationFailed("missing sub")
        if len(subject) > MAX_SUBJECT_LENGTH:
            raise AuthenticationFailed("sub too long")

        if config.issuer is not None and payload.get("iss") != config.issuer:
            raise AuthenticationFailed("wrong issuer")

        if config.audience is not None and not _audience_matches(
            payload.get("aud"), config.audience
        ):
            raise AuthenticationFailed("wrong audience")

        roles = payload.get(config.roles_claim, [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthenticationFailed("roles must be a list of strings")
        if any(len(r) > MAX_ROLE_LENGTH for r in roles):
            raise AuthenticationFailed("role name too long")

        token_id = payload.get("jti")
        if token_id is not None and not isinstance(token_id, str):
            raise AuthenticationFailed("bad jti")

        # subject, roles, expires_at, issued_at, token_id: positional, as a
        # frozen dataclass's keyword call costs a third more.
        return Claims(subject, frozenset(roles), exp, iat, token_id)


def issue_token(
    config: JwtConfig,
    subject: str,
    roles: Iterable[str],
    ttl: float,
    now: float,
    *,
    private_key: str | None = None,
    not_before: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> str:
    """Sign a token that :class:`TokenVerifier` with the same config accepts.

    Signs with ``config.algorithms[0]``: with the HMAC secret for HS*, else with
    ``private_key``. Sets ``sub``, the roles claim, ``iat``, ``exp``, a random
    ``jti``, and ``iss``/``aud`` when configured.

    Args:
        config: the JWT policy.
        subject: the ``sub`` claim.
        roles: role names for the roles claim.
        ttl: lifetime in seconds; ``exp`` is ``now + ttl`` (a negative ``ttl``
            gives an already expired token, which tests use).
        now: the issue time, seconds since the epoch.
        private_key: a PEM private key; required for public-key algorithms,
            ignored for HS*.
        not_before: when set, the ``nbf`` claim.
        extra_claims: more claims, merged last: they may replace the ones above
            (tests use this to build a token with a wrong ``aud`` or ``iss``).

    Raises:
        ConfigurationError: ``private_key`` is missing or does not fit the algorithm.
    """
    alg = config.algorithms[0]
    claims: dict[str, Any] = {
        "sub": subject,
        config.roles_claim: list(roles),
        "iat": _timestamp(now),
        "exp": _timestamp(now + ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if not_before is not None:
        claims["nbf"] = _timestamp(not_before)
    if config.issuer is not None:
        claims["iss"] = config.issuer
    if config.audience is not None:
        claims["aud"] = config.audience
    if extra_claims:
        claims.update(extra_claims)

    key: str | _PrivateKey
    if alg in HMAC_ALGORITHMS:
        if not config.secret:  # JwtConfig guarantees it
            raise ConfigurationError("jwt.secret", f"required for {alg}")
        key = config.secret
    else:
        if not private_key:
            raise ConfigurationError("private_key", f"a PEM private key is required for {alg}")
        key = _load_signing_key(private_key, alg)
    return jwt.encode(claims, key, algorithm=alg)


def _load_signing_key(pem: str, alg: str) -> _PrivateKey:
    """Load a PEM private key and check that it fits ``alg``."""
    try:
        key = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Say nothing more: cryptography's message could quote the key.
        raise ConfigurationError("private_key", "not a valid unencrypted PEM private key") from None
    if not isinstance(key, _PrivateKey):
        raise ConfigurationError("private_key", "must be an RSA, EC, Ed25519 or Ed448 key")
    _check_key_fits(key.public_key(), alg, "private_key")
    return key


def _load_verify_key(config: JwtConfig) -> _VerifyKey:
    """Load and check the key once, so that verify never prepares a key."""
    if config.uses_hmac:
        if not config.secret:  # JwtConfig guarantees it
            raise ConfigurationError("jwt.secret", "required for HS* algorithms")
        secret = config.secret.encode("utf-8")
        for alg in config.algorithms:
            algorithm = jwt.get_algorithm_by_name(alg)
            try:
                # PyJWT refuses PEM/SSH/DER keys as HMAC secrets: fail now, not per token.
                prepared = algorithm.prepare_key(secret)
            except jwt.InvalidKeyError:
                raise ConfigurationError(
                    "jwt.secret", "looks like an asymmetric key, not an HMAC secret"
                ) from None
            if algorithm.check_key_length(prepared) is not None:
                raise ConfigurationError(
                    "jwt.secret", f"too short for {alg}: use at least {_hmac_min_bytes(alg)} bytes"
                )
        return secret

    pem = config.public_key or ""
    try:
        key = load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError):
        raise ConfigurationError("jwt.public_key", "not a valid PEM public key") from None
    except UnsupportedAlgorithm:  # not a ValueError: a key type cryptography cannot load
        raise ConfigurationError("jwt.public_key", "unsupported key type") from None
    if not isinstance(key, _PublicKey):
        raise ConfigurationError("jwt.public_key", "must be an RSA, EC, Ed25519 or Ed448 key")
    for alg in config.algorithms:
        _check_key_fits(key, alg, "jwt.public_key")
    return key


def _check_key_fits(key: _PublicKey, alg: str, setting: str) -> None:
    """Raise ConfigurationError naming ``setting`` unless ``key`` fits ``alg``."""
    if alg.startswith(("RS", "PS")):
        if not isinstance(key, RSAPublicKey):
            raise ConfigurationError(setting, f"{alg} needs an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(setting, f"RSA keys need at least {MIN_RSA_BITS} bits")
    elif alg.startswith("ES"):
        if not isinstance(key, EllipticCurvePublicKey):
            raise ConfigurationError(setting, f"{alg} needs an EC key")
        curve = _EC_CURVES[alg]
        if not isinstance(key.curve, curve):
            raise ConfigurationError(setting, f"{alg} needs a key on curve {curve.name}")
    elif alg == "EdDSA":
        if not isinstance(key, Ed25519PublicKey | Ed448PublicKey):
            raise ConfigurationError(setting, "EdDSA needs an Ed25519 or Ed448 key")
    else:  # HMAC never gets here; JwtConfig refuses anything else
        raise ConfigurationError("jwt.algorithms", f"{alg} is not a public-key algorithm")


def _hmac_min_bytes(alg: str) -> int:
    return int(alg[2:]) // 8


def _number(value: Any) -> float | None:
    """A finite NumericDate as float, or None.

    ``bool`` is refused (it is an ``int``), and so are NaN and infinities, which
    Python's JSON parser accepts and which would make ``exp`` never expire.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _audience_matches(aud: Any, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return expected in aud
    return False


def _timestamp(value: float) -> int | float:
    """Whole seconds as an int, as most JWT libraries expect; fractions kept."""
    return int(value) if float(value).is_integer() else value
