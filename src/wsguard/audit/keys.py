"""The audit key: where it comes from and how its text is read.

The key is its own secret, separate from the JWT secret. :func:`resolve_audit_key`
takes it, in order, from the explicit setting (``audit_key`` in the config or
``WSGUARD_AUDIT_KEY``, read by the caller), then from a key file beside the log
(``<log path>.key``), which it creates with owner-only permissions when asked to
(development mode). ``wsguard log`` reads the key from the same places.

Key text, wherever it comes from, is read by :func:`parse_key_text`: exactly 64
hexadecimal characters are the hex encoding of 32 bytes; anything else is used
as the UTF-8 bytes of the string. A made key file holds 64 hex characters.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from wsguard.exceptions import ConfigurationError

__all__ = ["key_file_for", "parse_key_text", "read_key_file", "resolve_audit_key"]

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def parse_key_text(text: str) -> bytes:
    """Key bytes from text: 64 hex characters are hex, anything else is UTF-8.

    Raises:
        ConfigurationError: for an empty key.
    """
    text = text.strip()
    if not text:
        raise ConfigurationError("audit_key", "must not be empty")
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    return text.encode("utf-8")


def key_file_for(log_path: str) -> Path:
    """The key file kept beside ``log_path``: ``<log_path>.key``."""
    return Path(f"{log_path}.key")


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The key stored in ``path`` (see :func:`parse_key_text`)."""
    return parse_key_text(Path(path).read_text(encoding="utf-8"))


def resolve_audit_key(
    explicit: str | None, log_path: str, create: bool
) -> tuple[bytes, str | None]:
    """Find (or make) the audit key.

    Args:
        explicit: ``audit_key`` / ``WSGUARD_AUDIT_KEY``; wins when set.
        log_path: the audit log; its key file is ``<log_path>.key``.
        create: make a random key file when there is none (development mode).

    Returns:
        ``(key, note)``; ``note`` is ``"made audit key <file>"`` when a key file
        was created, for the caller to print, else ``None``.

    Raises:
        ConfigurationError: ``audit_key`` when there is no key and ``create`` is false.
    """
    if explicit:
        return parse_key_text(explicit), None
    path = key_file_for(log_path)
    if path.exists():
        return read_key_file(path), None
    if not create:
        raise ConfigurationError("audit_key", "not set")
    text = secrets.token_bytes(32).hex()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # another process made it first
        return read_key_file(path), None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return bytes.fromhex(text), f"made audit key {path}"
