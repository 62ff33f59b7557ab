"""Random bytes for ids and tokens, drawn from ``os.urandom`` 4 KiB at a time.

Every handshake needs a session id and a CSRF token. One ``getrandom`` system
call per value costs several microseconds under load; slicing a pooled buffer
costs a fraction of one. The bytes are the kernel's CSPRNG output either way:
the pool only changes when they are read. A slice is handed out once (under
a lock) and then dropped from the pool, and a forked child starts with an
empty pool, so that parent and child never share a byte.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_bytes"]

_POOL_BYTES = 4096

_lock = threading.Lock()
_pool = b""
_offset = 0


def random_bytes(count: int) -> bytes:
    """``count`` bytes from the kernel's CSPRNG (``os.urandom``), never handed out twice."""
    global _pool, _offset
    if count > _POOL_BYTES // 4:
        return os.urandom(count)
    with _lock:
        end = _offset + count
        if end > len(_pool):
            _pool, _offset, end = os.urandom(_POOL_BYTES), 0, count
        chunk = _pool[_offset:end]
        _offset = end
    return chunk


def _forget_pool() -> None:
    global _pool, _offset, _lock
    _lock = threading.Lock()  # a lock held by another thread at fork stays held
    _pool, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
