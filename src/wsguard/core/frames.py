"""Encoding of the server's frames (PROTOCOL.md sections 3 and 5)."""

from __future__ import annotations

from typing import Any

import msgspec

from wsguard.core.errors import PUBLIC_MESSAGES, ErrorCode

PROTOCOL_VERSION = "wsguard.v1"


def _encode_str_subclass(obj: Any) -> Any:
    # Html and SafePath values are str subclasses, which msgspec does not encode as is.
    if isinstance(obj, str):
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


_encode = msgspec.json.Encoder(enc_hook=_encode_str_subclass).encode


def encode_frame(kind: str, payload: Any, message_id: str | None = None) -> bytes:
    """A server frame: ``{"type", "id"?, "payload"}`` as UTF-8 JSON."""
    if message_id is None:
        return _encode({"type": kind, "payload": payload})
    return _encode({"type": kind, "id": message_id, "payload": payload})


def error_frame(
    code: ErrorCode,
    request_id: str,
    message_id: str | None = None,
    *,
    path: str | None = None,
    retry_after_ms: int | None = None,
) -> bytes:
    """An ``error`` frame with the fixed public message of ``code``."""
    payload: dict[str, Any] = {
        "code": code.value,
        "message": PUBLIC_MESSAGES[code],
        "requestId": request_id,
    }
    if path is not None:
        payload["path"] = path
    if retry_after_ms is not None:
        payload["retryAfterMs"] = retry_after_ms
    return encode_frame("error", payload, message_id)
