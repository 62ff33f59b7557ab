"""Pooled random bytes: never repeated, and not shared with a forked child."""

from __future__ import annotations

import base64
import os

from wsguard.core.entropy import random_bytes
from wsguard.core.session import new_csrf_token, new_session_id, new_session_secrets


def test_no_byte_handed_out_twice_across_pool_refills() -> None:
    chunks = [random_bytes(24) for _ in range(2000)]  # about 12 pool refills
    assert all(len(chunk) == 24 for chunk in chunks)
    assert len(set(chunks)) == len(chunks)
    assert len(random_bytes(5000)) == 5000  # larger than the pool: read directly


def test_ids_and_tokens_keep_their_shape() -> None:
    ids = {new_session_id() for _ in range(500)}
    tokens = {new_csrf_token() for _ in range(500)}
    assert len(ids) == len(tokens) == 500
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert all(len(t) == 32 and set(t) <= alphabet for t in tokens)


def test_session_secrets_from_one_draw_share_no_byte() -> None:
    """The id and the CSRF token drawn together have the shapes of their own functions."""
    pairs = [new_session_secrets() for _ in range(500)]
    ids = {session_id for session_id, _ in pairs}
    tokens = {token for _, token in pairs}
    assert len(ids) == len(tokens) == 500
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert all(len(t) == 32 and set(t) <= alphabet for t in tokens)
    for session_id, token in pairs[:50]:  # the token's bytes are not the id's
        raw_token = base64.urlsafe_b64decode(token)
        assert bytes.fromhex(session_id) not in raw_token
        assert len(raw_token) == 24


def test_forked_child_does_not_reuse_the_parents_pool() -> None:
    random_bytes(8)  # the pool is filled and partly used
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave at once
        os.write(write_end, random_bytes(32))
        os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 64)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    parent = random_bytes(32)
    assert len(child) == 32 and child != parent
