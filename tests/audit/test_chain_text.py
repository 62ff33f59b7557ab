"""The stored text of a record is its canonical JSON, built in one pass."""

from __future__ import annotations

import enum

from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.audit.chain import Chain, SignedRecord, canonical, record_ok, record_text
from wsguard.audit.events import AuditEvent

KEY = b"k" * 32
texts = st.none() | st.text(max_size=20)  # surrogates and non-ASCII included


class Level(enum.IntEnum):  # an int subclass: json writes its number
    HIGH = 3


details = st.dictionaries(
    st.text(max_size=8),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=8)
    | st.just(Level.HIGH),
)


@settings(max_examples=300, deadline=None)
@given(
    event=st.text(min_size=1, max_size=20),
    request_id=texts,
    session_id=texts,
    user=texts,
    client_ip=texts,
    details=details,
    time=st.floats(),
)
def test_record_text_is_canonical_and_signed(
    event: str,
    request_id: str | None,
    session_id: str | None,
    user: str | None,
    client_ip: str | None,
    details: dict[str, object],
    time: float,
) -> None:
    chain = Chain(KEY)
    for _ in range(2):  # the second one links to the first
        record = chain.record(
            AuditEvent(event, "info", time, request_id, session_id, user, client_ip, details)  # type: ignore[arg-type]
        )
        assert isinstance(record, SignedRecord)
        assert record_text(record) == canonical(record)
        assert record_ok(KEY, record)
    assert chain.prev_hash == record["hash"]


def test_record_hash_is_hmac_sha256_for_every_key_length() -> None:
    """The chain's own HMAC (RFC 2104 on hashlib states) equals the hmac module's.

    Keys longer than SHA-256's 64-byte block are hashed first; shorter ones padded.
    """
    for length in (1, 31, 32, 63, 64, 65, 200):
        key = bytes(range(length % 256)) * (length // 256) + bytes(range(length % 256))
        chain = Chain(key)
        record = chain.record(AuditEvent("auth_succeeded", "info", 1.5, user="u"))
        assert record_ok(key, record), length
        assert not record_ok(key + b"x", record), length
