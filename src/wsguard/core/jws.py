"""PyJWT's signature check, without three costs it pays again on every token.

PyJWT does the parsing, the algorithm allow-list and the signature maths here,
as everywhere in wsguard. Three things change, and nothing else:

* PyJWT 2.15 checks each segment against the base64url alphabet (the fix for
  GHSA-hxm8-2xgr-2p9m) one character at a time in a generator. The same check
  is done here by one regular expression over the same alphabet, with the same
  outcome for every input; ``tests/core/test_jws.py`` compares the two.
* PyJWT then decodes each segment through three layers of base64 wrappers and
  encodes it again to find stray trailing bits; here the last character tells
  that (``test_every_last_character_is_judged_as_pyjwt_does`` tries all 64),
  and binascii decodes.
* PyJWT re-examines the HMAC secret on every token (PEM, SSH, DER and JWK
  checks, a JSON parse among them), checks its length with a new hash object,
  and keys a new HMAC. The secret never changes, so all three are done once,
  here; each token's HMAC starts from a copy of the keyed state.

The first and the last were two thirds of a fresh token's verification; the
second took 27k more instructions per token (callgrind).

The payload, which wsguard reads itself (PyJWS leaves it as bytes), is parsed
with msgspec rather than ``json.loads`` (2.6 -> 0.6 us here). Both read every
valid UTF-8 JSON object alike, duplicate keys included (the last wins);
msgspec refuses what strict JSON does not allow and ``json.loads`` lets
through: ``NaN`` and ``Infinity``, numbers out of a float's range, a BOM,
lone surrogates, other encodings than UTF-8. Such a token is refused as
malformed; ``tests/core/test_jws.py`` holds the two parsers to that.

The override
rests on a private PyJWT method, so ``pyproject.toml`` holds PyJWT to 2.15.x
and the comparison test fails first if a release changes it.
"""

from __future__ import annotations

import binascii
import hmac
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

__all__ = ["SignatureChecker", "decode_segment"]

_ALPHABET = re.compile(rb"[A-Za-z0-9_-]*")
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# The last character of a canonical encoding leaves no stray bits: with 2
# characters in the last group its low 4 bits are zero, with 3 its low 2 bits.
_LAST_OF_TWO = frozenset(b"AQgw")
_LAST_OF_THREE = frozenset(b"AEIMQUYcgkosw048")
_PAYLOAD_JSON = msgspec.json.Decoder()


def decode_segment(segment: bytes, name: str) -> bytes:
    """Decode one base64url segment exactly as PyJWT 2.15 does.

    Up to two ``=`` of padding are accepted when the segment's length is a
    multiple of four; anything outside the alphabet, an impossible length and
    a non-canonical encoding (stray trailing bits) are refused. PyJWT decodes
    and encodes again to find stray bits; the last character tells the same.

    Raises:
        DecodeError: ``Invalid <name> padding``, PyJWT's own message.
    """
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4 != 0)
        or len(stripped) % 4 == 1
        or _ALPHABET.fullmatch(stripped) is None
    ):
        raise DecodeError(f"Invalid {name} padding")
    rest = len(stripped) % 4
    if (rest == 2 and stripped[-1] not in _LAST_OF_TWO) or (
        rest == 3 and stripped[-1] not in _LAST_OF_THREE
    ):
        raise DecodeError(f"Invalid {name} padding")  # not canonical: stray trailing bits
    # Only alphabet characters are left, so the plain decoder reads them all.
    return binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-rest % 4))


class _CheckedSecret(HMACAlgorithm):
    """An HMAC algorithm whose one secret PyJWT examined at start-up.

    For that secret, the examination, the key-length verdict and the keyed
    HMAC state are kept; any other key takes PyJWT's own path.
    """

    def __init__(self, hash_alg: Any, secret: bytes) -> None:
        super().__init__(hash_alg)
        self._secret = secret
        # Raises InvalidKeyError for a PEM, SSH, DER or JWK "secret", as PyJWT would.
        self._prepared = super().prepare_key(secret)
        self._length_verdict = super().check_key_length(self._prepared)
        self._keyed = hmac.new(self._prepared, digestmod=hash_alg)

    def prepare_key(self, key: str | bytes) -> bytes:
        if key is self._secret:
            return self._prepared
        return super().prepare_key(key)

    def check_key_length(self, key: Any) -> str | None:
        if key is self._prepared:
            return self._length_verdict
        return super().check_key_length(key)

    def sign(self, msg: bytes, key: bytes) -> bytes:
        if key is self._prepared:
            # The same HMAC as hmac.new(key, msg, hash_alg), from a copy of
            # the keyed state rather than keying it again.
            mac = self._keyed.copy()
            mac.update(msg)
            return mac.digest()
        return super().sign(msg, key)


class SignatureChecker(PyJWS):
    """Checks a compact JWS against one key and returns its JSON payload.

    Args:
        algorithms: the allowed ``alg`` values; no other is ever used.
        key: the HMAC secret, or a loaded public key.

    Raises:
        jwt.InvalidKeyError: the secret is an asymmetric key or a JWK.
    """

    _decode_base64url_segment = staticmethod(decode_segment)

    def __init__(self, algorithms: Sequence[str], key: Any) -> None:
        super().__init__(
            algorithms, options={"verify_signature": True, "enforce_minimum_key_length": True}
        )
        self._allowed = list(algorithms)
        self._key = key
        if isinstance(key, bytes):
            for alg in algorithms:
                default = self.get_algorithm_by_name(alg)
                if isinstance(default, HMACAlgorithm):
                    self.unregister_algorithm(alg)
                    self.register_algorithm(alg, _CheckedSecret(default.hash_alg, key))

    def payload(self, token: str) -> dict[str, Any]:
        """The verified payload of ``token``; claims are not checked here.

        Raises:
            jwt.PyJWTError: the token is malformed, its ``alg`` is not allowed
                or its signature does not verify.
        """
        decoded = self.decode_complete(token, key=self._key, algorithms=self._allowed)
        # Strict JSON (see the module docstring); PyJWT's own messages.
        try:
            payload = _PAYLOAD_JSON.decode(decoded["payload"])
        except (msgspec.DecodeError, RecursionError) as exc:
            raise DecodeError(f"Invalid payload string: {exc}") from exc
        if not isinstance(payload, dict):
            raise DecodeError("Invalid payload string: must be a json object")
        return payload
