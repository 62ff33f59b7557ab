"""Revival prevention: revoked tokens stay refused until they would have expired."""

from __future__ import annotations

import pytest

from wsguard.config import JwtConfig
from wsguard.core.auth import Claims, TokenVerifier, issue_token
from wsguard.core.clock import FakeClock
from wsguard.core.revocation import Revocations

SECRET = "revocation-secret-0123456789abcdef0123456789"
T0 = 1_764_400_000.0  # whole seconds, as the issuer writes iat
MAX_TOKEN_TTL = 86_400.0


def claims(
    sub: str = "alice", iat: float | None = T0, exp: float = T0 + 600, jti: str | None = "j1"
) -> Claims:
    return Claims(subject=sub, roles=frozenset(), expires_at=exp, issued_at=iat, token_id=jti)


class Server:
    """What the handshake does: verify, then ask the revocation list."""

    def __init__(self, clock: FakeClock, leeway: float = 0.0) -> None:
        self.clock = clock
        self.config = JwtConfig(secret=SECRET, leeway=leeway)
        self.verifier = TokenVerifier(self.config, clock)
        self.revocations = Revocations(leeway=leeway)

    def token(self, sub: str = "alice", ttl: float = 600) -> str:
        return issue_token(self.config, sub, ["user"], ttl, self.clock.now())

    def admits(self, token: str) -> bool:
        return not self.revocations.is_revoked(self.verifier.verify(token), self.clock.now())

    def terminate_user(self, sub: str) -> None:
        now = self.clock.now()
        self.revocations.revoke_user(sub, at=now, until=now + MAX_TOKEN_TTL)

    def terminate_token(self, token: str) -> None:
        c = self.verifier.verify(token)
        assert c.token_id is not None
        self.revocations.revoke_token(c.token_id, until=c.expires_at)


def test_nothing_is_revoked_at_first() -> None:
    revocations = Revocations()
    assert not revocations.is_revoked(claims(), T0)
    assert len(revocations) == 0


def test_revoked_jti_is_refused_until_its_exp() -> None:
    revocations = Revocations()
    revocations.revoke_token("j1", until=T0 + 600)
    assert revocations.is_revoked(claims(jti="j1"), T0 + 1)
    assert revocations.is_revoked(claims(jti="j1"), T0 + 600)  # exp itself still covered
    assert not revocations.is_revoked(claims(jti="j1"), T0 + 600.001)
    assert not revocations.is_revoked(claims(jti="j2"), T0 + 1)
    assert not revocations.is_revoked(claims(jti=None), T0 + 1)
    assert len(revocations) == 1


def test_revoke_token_only_extends() -> None:
    revocations = Revocations()
    revocations.revoke_token("j1", until=T0 + 600)
    revocations.revoke_token("j1", until=T0 + 10)
    assert revocations.is_revoked(claims(jti="j1"), T0 + 500)


def test_user_revocation_compares_iat() -> None:
    revocations = Revocations()
    revocations.revoke_user("alice", at=T0 + 100, until=T0 + 100 + MAX_TOKEN_TTL)
    now = T0 + 200
    assert revocations.is_revoked(claims(iat=T0, jti=None), now)
    assert revocations.is_revoked(claims(iat=T0 + 100, jti=None), now)  # same instant: refused
    assert not revocations.is_revoked(claims(iat=T0 + 100.5, jti=None), now)
    assert not revocations.is_revoked(claims(iat=T0 + 101, jti="other"), now)
    assert revocations.is_revoked(claims(iat=None, jti=None), now)  # cannot prove it is newer
    assert not revocations.is_revoked(claims(sub="bob", iat=T0, jti=None), now)


def test_user_revocation_lapses_at_until() -> None:
    revocations = Revocations()
    revocations.revoke_user("alice", at=T0, until=T0 + 1000)
    assert revocations.is_revoked(claims(iat=None), T0 + 1000)
    assert not revocations.is_revoked(claims(iat=None), T0 + 1000.5)


def test_repeated_user_revocation_moves_forward_only() -> None:
    revocations = Revocations()
    revocations.revoke_user("alice", at=T0 + 100, until=T0 + 5000)
    revocations.revoke_user("alice", at=T0 + 50, until=T0 + 1000)
    assert revocations.is_revoked(claims(iat=T0 + 80, jti=None), T0 + 4000)
    assert len(revocations) == 1


def test_leeway_extends_every_entry() -> None:
    revocations = Revocations(leeway=30.0)
    revocations.revoke_token("j1", until=T0 + 600)
    revocations.revoke_user("bob", at=T0, until=T0 + 1000)
    assert revocations.is_revoked(claims(jti="j1"), T0 + 630)
    assert not revocations.is_revoked(claims(jti="j1"), T0 + 631)
    assert revocations.is_revoked(claims(sub="bob", iat=T0, jti=None), T0 + 1030)
    with pytest.raises(ValueError):
        Revocations(leeway=-1)


def test_prune_keeps_memory_bounded() -> None:
    revocations = Revocations()
    for i in range(1000):
        revocations.revoke_token(f"j{i}", until=T0 + i)
        revocations.revoke_user(f"user{i}", at=T0, until=T0 + i)
    assert len(revocations) == 2000
    revocations.prune(T0 + 499)  # entries with until >= now stay
    assert len(revocations) == 2 * 501  # i = 499 .. 999
    assert revocations.is_revoked(claims(jti="j999"), T0 + 499)
    assert revocations.is_revoked(claims(sub="user999", iat=T0, jti=None), T0 + 499)
    revocations.prune(T0 + 1000)
    assert len(revocations) == 0
    assert not revocations.is_revoked(claims(jti="j999"), T0 + 1000)


# -- the handshake rule, with real tokens ------------------------------------------


def test_terminated_token_refused_new_token_one_second_later_accepted() -> None:
    clock = FakeClock(T0)
    server = Server(clock)
    old = server.token(ttl=600)
    assert server.admits(old)
    clock.advance(10)
    server.terminate_user("alice")
    server.terminate_token(old)
    assert not server.admits(old)
    clock.advance(1)
    new = server.token()
    assert server.admits(new)
    assert not server.admits(old)
    # The old token stays refused for its whole remaining life ...
    clock.advance(589)
    assert clock.now() == T0 + 600
    assert not server.admits(old)
    assert server.admits(new)


def test_terminated_without_jti_refused_until_the_user_entry_lapses() -> None:
    clock = FakeClock(T0)
    server = Server(clock)
    old = issue_token(server.config, "alice", [], 600, clock.now(), extra_claims={"jti": None})
    verified = server.verifier.verify(old)
    assert verified.token_id is None
    clock.advance(5)
    server.terminate_user("alice")
    assert not server.admits(old)
    clock.advance(1)
    assert server.admits(server.token())
    assert not server.admits(old)


def test_new_token_in_the_same_second_is_refused() -> None:
    """Documented behaviour: ``iat <= at`` refuses a token stamped with the revocation instant.

    The issuer writes whole seconds, so a client re-authenticating in the very second
    of its termination is refused once and gets in one second later.
    """
    clock = FakeClock(T0)
    server = Server(clock)
    server.token()
    server.terminate_user("alice")
    same_second = server.token()
    assert server.verifier.verify(same_second).issued_at == T0
    assert not server.admits(same_second)
    clock.advance(1)
    assert server.admits(server.token())


def test_fractional_revocation_time_and_whole_second_iat() -> None:
    clock = FakeClock(T0 + 0.4)
    server = Server(clock)
    server.terminate_user("alice")  # at T0 + 0.4
    clock.advance(0.6)  # T0 + 1, written as an int iat
    assert server.admits(server.token())


def test_other_users_are_unaffected() -> None:
    clock = FakeClock(T0)
    server = Server(clock)
    bob = server.token("bob")
    server.terminate_user("alice")
    assert server.admits(bob)
