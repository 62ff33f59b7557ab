"""The HMAC hash chain: how an entry is built, signed and checked.

Theory of operation:

* An entry (a *record*) is a JSON object with the fields :data:`FIELDS`:
  ``seq`` (1, 2, 3 ...), ``time``, ``event``, ``severity``, ``request_id``,
  ``session_id``, ``user``, ``client_ip``, ``details``, ``prev_hash`` and
  ``hash``. ``hash`` is HMAC-SHA256(audit key, canonical JSON of the record
  without ``hash``), hex; ``prev_hash`` is the previous record's ``hash``, or
  :data:`GENESIS` (64 zeros) for the first. Canonical JSON is
  ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
  UTF-8 encoded. Editing a record breaks its HMAC; deleting, inserting or
  reordering records breaks the ``seq`` sequence or the ``prev_hash`` links,
  and nobody without the key can re-sign the rest.
* Retention deletes the oldest records. What remains starts from an *anchor*:
  the first kept ``seq`` and its ``prev_hash``, signed as
  HMAC(key, ``"anchor|<seq>|<prev_hash>"``), so a verifier starts there instead
  of at seq 1 and a forged or stale anchor is detected.
* :class:`Chain` holds the position (next seq, previous hash) and turns events
  into signed records. It is not thread-safe: the writer thread owns it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import json.encoder
from dataclasses import dataclass
from typing import Any, overload

from wsguard.audit.events import AuditEvent, DetailValue
from wsguard.exceptions import WSGuardError

_c_halves: Any
try:  # the optional C extension (setup.py); py_halves is the reference
    from wsguard.audit._record_text import halves as _c_halves
except ImportError:  # not built: every record takes the Python path
    _c_halves = None

__all__ = [
    "CHECKPOINT",
    "FIELDS",
    "GENESIS",
    "RETENTION",
    "Anchor",
    "AuditLogError",
    "Chain",
    "Record",
    "anchor_mac",
    "canonical",
    "py_halves",
    "record_hash",
    "record_ok",
    "record_text",
    "SignedRecord",
]

GENESIS = "0" * 64
"""The ``prev_hash`` of the very first record."""

CHECKPOINT = "checkpoint"
"""The event of a signed checkpoint record; details ``{"count": <its seq>}``."""

RETENTION = "retention"
"""The event of the record written after retention deleted old records."""

FIELDS = frozenset(
    {
        "seq",
        "time",
        "event",
        "severity",
        "request_id",
        "session_id",
        "user",
        "client_ip",
        "details",
        "prev_hash",
        "hash",
    }
)

Record = dict[str, Any]


class SignedRecord(dict[str, Any]):
    """A record made by :meth:`Chain.record`, with its canonical text kept.

    ``text`` equals ``canonical(record)``; sinks store it rather than
    serialising the record a second time.
    """

    text: str = ""


def record_text(record: Record) -> str:
    """The canonical text of ``record``, serialised only if it was not yet."""
    return record.text if isinstance(record, SignedRecord) else canonical(record)


class AuditLogError(WSGuardError):
    """The audit log file cannot be opened or extended (unreadable or tampered)."""


def canonical(value: Any) -> str:
    """The canonical JSON text that is signed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# What json.dumps(ensure_ascii=False) itself uses for strings (the C version).
_encode_str = json.encoder.encode_basestring
_INFINITY = float("inf")


def _json(value: Any) -> str:
    """``canonical(value)`` for a scalar, without building an encoder."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        if value != value:
            return "NaN"
        if value == _INFINITY:
            return "Infinity"
        if value == -_INFINITY:
            return "-Infinity"
        return float.__repr__(value)
    return canonical(value)  # subclasses and anything else: json's own rules


_BLOCK = 64  # SHA-256's block size in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC's inner and outer padded keys (RFC 2104 section 2)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def record_hash(key: bytes, record: Record) -> str:
    """HMAC-SHA256 of ``record`` without its ``hash`` field."""
    return _mac(key, canonical({k: v for k, v in record.items() if k != "hash"}))


def record_ok(key: bytes, record: Record) -> bool:
    """``record`` has exactly the expected fields and a valid ``hash``."""
    return (
        set(record) == FIELDS
        and isinstance(record["hash"], str)
        and hmac.compare_digest(record["hash"], record_hash(key, record))
    )


def anchor_mac(key: bytes, seq: int, prev_hash: str) -> str:
    """The signature of an anchor: HMAC(key, ``"anchor|<seq>|<prev_hash>"``)."""
    return _mac(key, f"anchor|{seq}|{prev_hash}")


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a pruned log starts: its first ``seq`` and that record's ``prev_hash``."""

    seq: int
    prev_hash: str
    mac: str

    @classmethod
    def make(cls, key: bytes, seq: int, prev_hash: str) -> Anchor:
        """A signed anchor."""
        return cls(seq, prev_hash, anchor_mac(key, seq, prev_hash))

    def valid(self, key: bytes) -> bool:
        """The signature matches."""
        return hmac.compare_digest(self.mac, anchor_mac(key, self.seq, self.prev_hash))

    def to_json(self) -> str:
        return canonical({"seq": self.seq, "prev_hash": self.prev_hash, "mac": self.mac})

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        """Parse :meth:`to_json`'s output.

        Raises:
            ValueError: when the text is not an anchor.
        """
        data = json.loads(text)
        if not (
            isinstance(data, dict)
            and isinstance(data.get("seq"), int)
            and isinstance(data.get("prev_hash"), str)
            and isinstance(data.get("mac"), str)
        ):
            raise ValueError("not an anchor")
        return cls(data["seq"], data["prev_hash"], data["mac"])


@overload
def _text(value: str) -> str: ...
@overload
def _text(value: None) -> None: ...
@overload
def _text(value: str | None) -> str | None: ...
def _text(value: str | None) -> str | None:
    # A lone surrogate cannot be UTF-8 encoded; never let it stop the writer.
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _detail(value: object) -> DetailValue:
    if value is None or isinstance(value, bool | int | float):
        return value
    return _text(str(value))


def py_halves(event: AuditEvent, prev_hash: str, seq: int) -> tuple[str, str, tuple[Any, ...]]:
    """The two halves of the record text around ``hash``, in Python.

    Returns:
        ``(head, tail, fields)``: ``fields`` are the event's eight fields as
        they are signed (lone surrogates replaced, the time a float, the
        details a plain dict of JSON values).
    """
    # ASCII strings need no check for lone surrogates. Where the C extension
    # is not built, every record comes here and ASCII is the usual case:
    # tested inline rather than through _text, a Python call per field
    # (a comprehension over the fields took 4.6 us a record, these lines
    # 2.6 us: the repetition stays).
    name = event.event
    if not name.isascii():
        name = _text(name)
    request_id = event.request_id
    if request_id is not None and not request_id.isascii():
        request_id = _text(request_id)
    session_id = event.session_id
    if session_id is not None and not session_id.isascii():
        session_id = _text(session_id)
    user = event.user
    if user is not None and not user.isascii():
        user = _text(user)
    client_ip = event.client_ip
    if client_ip is not None and not client_ip.isascii():
        client_ip = _text(client_ip)
    severity = event.severity
    time = float(event.time)
    details: dict[str, DetailValue]
    if event.details:
        details = {_text(str(k)): _detail(v) for k, v in event.details.items()}
        details_text = ",".join(_encode_str(k) + ":" + _json(details[k]) for k in sorted(details))
    else:
        details, details_text = {}, ""
    # The same text as canonical(record) without and with "hash", written
    # out: the keys' order is fixed, and json.dumps would rebuild an encoder
    # per call.
    head_text = (
        f'{{"client_ip":{"null" if client_ip is None else _encode_str(client_ip)}'
        f',"details":{{{details_text}}},"event":{_encode_str(name)}'
    )
    tail_text = (
        f'"prev_hash":{_encode_str(prev_hash)}'
        f',"request_id":{"null" if request_id is None else _encode_str(request_id)}'
        f',"seq":{int.__repr__(seq)}'
        f',"session_id":{"null" if session_id is None else _encode_str(session_id)}'
        f',"severity":{_encode_str(severity) if type(severity) is str else _json(severity)}'
        f',"time":{float.__repr__(time) if time - time == 0.0 else _json(time)}'
        f',"user":{"null" if user is None else _encode_str(user)}}}'
    )
    fields = (name, severity, time, request_id, session_id, user, client_ip, details)
    return head_text, tail_text, fields


class Chain:
    """The chain's position, and the signing of new records.

    Args:
        key: the audit key.
        seq: the last record's seq (0 for an empty log).
        prev_hash: the last record's hash (:data:`GENESIS` for an empty log).
        last_event: the last record's event (``None`` for an empty log).
    """

    def __init__(
        self, key: bytes, seq: int = 0, prev_hash: str = GENESIS, last_event: str | None = None
    ) -> None:
        self.key = key
        self.seq = seq
        self.prev_hash = prev_hash
        self.last_event = last_event
        # HMAC-SHA256 by RFC 2104 on hashlib's own states, keyed once: a record
        # costs two copies and two C updates, without the hmac module's Python
        # layers (copy, update, _current, hexdigest).
        self._inner, self._outer = _hmac_states(key)

    @property
    def sealed(self) -> bool:
        """The last record is a checkpoint (or the log is empty)."""
        return self.last_event in (None, CHECKPOINT)

    def record(self, event: AuditEvent) -> Record:
        """Sign ``event`` as the next record and advance the chain.

        The record is serialised once: canonical JSON sorts the keys, and
        ``hash`` sorts between ``event`` and ``prev_hash``, so the signed text
        is the two halves around it, and the stored text is the same halves
        with ``hash`` between them (``SignedRecord.text``). The halves come
        from the C extension for the common event (every string ASCII, a
        finite float time, no details) and from :func:`py_halves` otherwise.
        A property test holds the text equal to :func:`canonical` and the hash
        to :mod:`hmac`.
        """
        seq = self.seq + 1
        prev_hash = self.prev_hash
        found = _c_halves(event, prev_hash, seq) if _c_halves is not None else None
        if found is not None:  # signed as they are: nothing to replace or convert
            head_text, tail_text = found
            name, severity, time, request_id, session_id, user, client_ip, _ = event
            details: dict[str, DetailValue] = {}
        else:
            head_text, tail_text, fields = py_halves(event, prev_hash, seq)
            name, severity, time, request_id, session_id, user, client_ip, details = fields
        inner = self._inner.copy()
        inner.update(f"{head_text},{tail_text}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        digest = outer.hexdigest()
        record = SignedRecord(
            client_ip=client_ip,
            details=details,
            event=name,
            hash=digest,
            prev_hash=prev_hash,
            request_id=request_id,
            seq=seq,
            session_id=session_id,
            severity=severity,
            time=time,
            user=user,
        )
        record.text = f'{head_text},"hash":"{digest}",{tail_text}'
        self.seq = seq
        self.prev_hash = digest
        self.last_event = name
        return record

    def checkpoint(self, time: float) -> Record:
        """Sign a checkpoint record sealing everything before it."""
        event = AuditEvent(CHECKPOINT, "info", time, details={"count": self.seq + 1})
        return self.record(event)

    def copy(self) -> Chain:
        """A copy to build a batch on, committed only once the batch is written."""
        return Chain(self.key, self.seq, self.prev_hash, self.last_event)

    def adopt(self, other: Chain) -> None:
        """Take ``other``'s position (after its records were written)."""
        self.seq, self.prev_hash, self.last_event = other.seq, other.prev_hash, other.last_event
