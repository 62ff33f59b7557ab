"""The client message envelope (PROTOCOL.md section 4).

A text frame holds one UTF-8 JSON object with the keys ``type``, ``id``,
``payload``, ``csrfToken`` and ``timestamp``, and no others. Duplicate keys at
any depth are refused (parsers disagree about which one wins, which lets an
attacker show one value to a filter and another to the handler), and so are
``NaN``/``Infinity`` and nesting deeper than ``max_depth``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any, NamedTuple

import msgspec

from wsguard.config import MessageConfig
from wsguard.core.errors import ErrorCode
from wsguard.core.sanitize import REFUSED_NON_ASCII, TooDeep, UnsafeValue, clean_tree

ENVELOPE_KEYS = frozenset({"type", "id", "payload", "csrfToken", "timestamp"})
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_CSRF_TOKEN_CHARS = 256
_MAX_TIMESTAMP = 2**63  # ms; far beyond any clock skew, and within a float's range


class EnvelopeError(Exception):
    """A frame that is not a valid envelope.

    Attributes:
        code: the error code for the client.
        detail: for the server log only.
        path: for ``INVALID_PAYLOAD``, the failing field's JSON path.
        message_id: the client's ``id`` when it was valid, to echo.
    """

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        path: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.path = path
        self.message_id = message_id


class Envelope(NamedTuple):
    """A decoded envelope; ``payload`` is still untyped here."""

    type: str
    id: str | None
    payload: Any
    csrf_token: str | None
    timestamp: int | None


_new = tuple.__new__


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError("non-finite number")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_constant=_refuse_constant)

# The fast path. A frame with no escape other than \" \\ \/ \n \r \t (so no \u,
# which could spell a key or a character in disguise, and no \b or \f control
# characters), none of the characters that sanitization refuses (DEL, C1
# controls, bidi overrides and isolates, lone surrogates), none of the
# prototype-pollution key names, fewer brackets than the depth limit and, when
# it is not ASCII, already in NFC cannot hold a string that sanitization would
# change or refuse, nor nest too deep. (NFC of the whole text implies NFC of
# every string in it, escapes decoded: no canonical composition involves " \ /
# or a tab, newline or carriage return, which a test checks over all of
# Unicode.) Such a frame is decoded by msgspec in C, and duplicate keys are
# ruled out by counting: every key ends with an unescaped ``"`` followed by
# ``:``, so the count of ``"`` + optional space + ``:`` in the text is at least
# the number of keys in it (an escaped quote or a value starting with ``:``
# only adds to it), while duplicates make the decoded objects hold fewer. Equal
# counts therefore prove there is no duplicate; any doubt takes the slow path.
# Property tests check that both paths decide alike.
_msgspec_decode = msgspec.json.Decoder().decode
_is_normalized = unicodedata.is_normalized
_KEY_END = re.compile(r'"[ \t\r\n]*:')
_SLOW_ESCAPE = re.compile(r'\\[^"\\/nrt]')
_SLOW_MARKERS = ("\x7f", "__proto__", "constructor", "prototype")
_REFUSED_NON_ASCII = re.compile(f"[{REFUSED_NON_ASCII}]")  # sanitize's, the same set


def py_prescan(text: str, max_depth: int) -> int:
    """The number of key ends in a frame that may take the fast path, else -1.

    A key end is ``"`` + optional JSON whitespace + ``:``. -1 means the frame
    must take the exact slow path (see above). ``_envelope_scan.prescan`` does
    the same in one pass of C; this is the fallback, and the reference its
    tests compare it with.
    """
    if not text.isascii() and _REFUSED_NON_ASCII.search(text) is not None:
        return -1
    for marker in _SLOW_MARKERS:
        if marker in text:
            return -1
    if "\\" in text and _SLOW_ESCAPE.search(text) is not None:
        return -1
    if text.count("{") + text.count("[") > max_depth:
        return -1
    # Compact JSON (what browsers send) has no whitespace after a quote, and
    # then the count is that of '":', which str.count finds without the regex.
    if '" ' in text or '"\t' in text or '"\n' in text or '"\r' in text:
        return len(_KEY_END.findall(text))
    return text.count('":')


def py_count_keys(value: Any) -> int:
    """Keys in every dict of a decoded value (dicts and lists, as msgspec makes)."""
    count = 0
    if type(value) is dict:
        count = len(value)
        for item in value.values():
            if type(item) is dict or type(item) is list:
                count += py_count_keys(item)
    elif type(value) is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                count += py_count_keys(item)
    return count


def _no_envelope_fields(
    obj: object, now: float, max_skew_ms: float, max_csrf_chars: int, envelope_type: type
) -> Any:
    """Without the C extension every envelope takes ``_checked_fields``."""
    return None


try:
    # The same in C, built by setup.py when a compiler is there.
    from wsguard.core._envelope_scan import count_keys, envelope_fields, prescan
except ImportError:  # pragma: no cover - a build without the extension
    prescan, count_keys, envelope_fields = py_prescan, py_count_keys, _no_envelope_fields


class EnvelopeDecoder:
    """Decodes and checks envelopes against :class:`MessageConfig`.

    Args:
        config: the message limits.
    """

    def __init__(self, config: MessageConfig) -> None:
        self._max_depth = config.max_depth
        self._max_skew_ms = config.max_clock_skew * 1000.0

    def decode(self, text: str, now: float) -> Envelope:
        """Decode one text frame.

        Args:
            text: the frame's text.
            now: the server time in seconds, for the ``timestamp`` check.

        Raises:
            EnvelopeError: with ``INVALID_MESSAGE`` or ``INVALID_PAYLOAD``.
        """
        fast = self._fast_decode(text)
        if fast is not None:
            return self._fields(fast, now)
        try:
            raw = _DECODER.decode(text)
        except _DuplicateKey:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "duplicate key") from None
        except RecursionError:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "nesting too deep") from None
        except ValueError:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "invalid JSON") from None
        if not isinstance(raw, dict):
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "not a JSON object")
        message_id = raw.get("id")
        if not (isinstance(message_id, str) and MESSAGE_ID.fullmatch(message_id)):
            if message_id is not None:
                raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "bad id")
            message_id = None
        try:
            obj = clean_tree(raw, self._max_depth)
        except TooDeep:
            raise EnvelopeError(
                ErrorCode.INVALID_MESSAGE, "nesting too deep", None, message_id
            ) from None
        except UnsafeValue as exc:
            if exc.path.startswith("$.payload"):
                raise EnvelopeError(
                    ErrorCode.INVALID_PAYLOAD, exc.reason, exc.path, message_id
                ) from None
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, exc.reason, None, message_id) from None
        return self._fields(obj, now)

    def _fast_decode(self, text: str) -> dict[str, Any] | None:
        """Decode a frame that cannot need sanitizing, or None for the slow path."""
        key_ends = prescan(text, self._max_depth)
        if key_ends < 0 or (not text.isascii() and not _is_normalized("NFC", text)):
            return None
        try:
            obj = _msgspec_decode(text)
        except msgspec.DecodeError:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "invalid JSON") from None
        if type(obj) is not dict:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "not a JSON object")
        if count_keys(obj) != key_ends:
            return None  # perhaps a duplicate key: let the exact parser decide
        return obj

    def _fields(self, obj: dict[str, Any], now: float) -> Envelope:
        """Check the envelope's own keys and build the :class:`Envelope`.

        The C extension builds a valid envelope in one call; it declines
        (None) anything it would refuse, and :meth:`_checked_fields` then
        names the error.
        """
        envelope: Envelope | None = envelope_fields(
            obj, now, self._max_skew_ms, MAX_CSRF_TOKEN_CHARS, Envelope
        )
        if envelope is not None:
            return envelope
        return self._checked_fields(obj, now)

    def _checked_fields(self, obj: dict[str, Any], now: float) -> Envelope:
        """:meth:`_fields` in Python: the reference, and the path of every error."""
        message_id = obj.get("id")
        if not (type(message_id) is str and MESSAGE_ID.fullmatch(message_id)):
            if message_id is not None:
                raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "bad id")
            message_id = None
        if not ENVELOPE_KEYS.issuperset(obj):
            raise EnvelopeError(
                ErrorCode.INVALID_MESSAGE, "unknown top-level key", None, message_id
            )
        kind = obj.get("type")
        if not isinstance(kind, str) or not kind:
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "missing type", None, message_id)
        csrf_token = obj.get("csrfToken")
        if csrf_token is not None and (
            not isinstance(csrf_token, str) or len(csrf_token) > MAX_CSRF_TOKEN_CHARS
        ):
            raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "bad csrfToken", None, message_id)
        timestamp = obj.get("timestamp")
        if timestamp is not None:
            if type(timestamp) is not int:
                raise EnvelopeError(ErrorCode.INVALID_MESSAGE, "bad timestamp", None, message_id)
            # A JSON integer has no size limit: one beyond any float is out of range.
            if abs(timestamp) > _MAX_TIMESTAMP or abs(timestamp - now * 1000.0) > self._max_skew_ms:
                raise EnvelopeError(
                    ErrorCode.INVALID_MESSAGE, "timestamp out of range", None, message_id
                )
        payload = obj.get("payload", {})
        if not isinstance(payload, dict):
            raise EnvelopeError(
                ErrorCode.INVALID_PAYLOAD, "payload not an object", "$.payload", message_id
            )
        # tuple.__new__ builds the named tuple without its Python __new__.
        return _new(Envelope, (kind, message_id, payload, csrf_token, timestamp))
