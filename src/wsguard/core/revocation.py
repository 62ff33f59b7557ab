"""Revival prevention: tokens of terminated sessions are refused until they expire.

A terminated session's token is covered in one of two ways:

* by its ``jti`` (:meth:`Revocations.revoke_token`), kept until that token's
  ``exp``: after that the verifier refuses the token anyway;
* by its user's revocation time (:meth:`Revocations.revoke_user`): every token
  of that ``sub`` issued (``iat``) at or before the revocation time is refused,
  kept for the longest token lifetime the server accepts.

Same-second rule: the comparison is ``iat <= at`` on float seconds. A token whose
``iat`` equals the revocation time is refused, including a genuinely new token
issued in that same instant. :func:`wsguard.core.auth.issue_token` writes whole
seconds as an int, and most issuers truncate ``iat`` to whole seconds, so after
``revoke_user(user, at=T)`` with a whole-second ``T`` a token issued at ``T`` is
refused and one issued at ``T + 1`` is accepted; a client terminated mid-second
``T + 0.4`` gets back in with a token stamped ``T + 1`` at the earliest. Erring
this way keeps a token minted just before the termination from reviving the
session.

Pure: no clock; callers pass ``now``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # auth imports wsguard.config, which may import this module
    from wsguard.core.auth import Claims


__all__ = ["Revocations"]


class Revocations:
    """Revoked token ids and per-user revocation times.

    Each is kept until the token it covers would have expired.

    Memory is bounded by :meth:`prune`, which the caller runs on its tick: every
    entry carries the time after which it can no longer matter.

    Args:
        leeway: the verifier's clock leeway (``jwt.leeway``). The verifier accepts
            a token until ``exp + leeway`` inclusive, so every keep-until time is
            extended by it; otherwise a revoked token would revive in that window.
    """

    def __init__(self, leeway: float = 0.0) -> None:
        if leeway < 0:
            raise ValueError("leeway must be >= 0")
        self._leeway = leeway
        self._tokens: dict[str, float] = {}  # jti -> keep until (exp + leeway)
        self._users: dict[str, tuple[float, float]] = {}  # sub -> (revoked at, keep until)

    def revoke_token(self, token_id: str, until: float) -> None:
        """Refuse the token with this ``jti`` until ``until``.

        Args:
            token_id: the token's ``jti``.
            until: the token's ``exp``; a later call may only extend it.
        """
        until += self._leeway
        previous = self._tokens.get(token_id)
        if previous is None or until > previous:
            self._tokens[token_id] = until

    def revoke_user(self, user: str, at: float, until: float) -> None:
        """Refuse every token of ``user`` issued at or before ``at``.

        Args:
            user: the ``sub``.
            at: the revocation time; tokens with ``iat <= at`` (or no ``iat``) are refused.
            until: when to forget the revocation: ``at`` plus the longest token
                lifetime accepted (for example a ``max_token_ttl`` setting). A
                token issued before ``at`` has expired by then.
        """
        until += self._leeway
        previous = self._users.get(user)
        if previous is not None:
            # Repeated terminations never shorten or move back an earlier one.
            at = max(at, previous[0])
            until = max(until, previous[1])
        self._users[user] = (at, until)

    def is_revoked(self, claims: Claims, now: float) -> bool:
        """Whether a verified token must be refused as revoked.

        Args:
            claims: the verified claims.
            now: the current time; an entry counts up to and including its
                keep-until time (as the verifier's ``now > exp + leeway`` test
                does), and no longer after it, even before :meth:`prune` runs.

        Returns:
            ``True`` when the ``jti`` is revoked, or when the user has a standing
            revocation and the token's ``iat`` is missing or at or before it (a
            token without ``iat`` cannot prove it is newer).
        """
        if claims.token_id is not None:
            until = self._tokens.get(claims.token_id)
            if until is not None and now <= until:
                return True
        user = self._users.get(claims.subject)
        if user is not None:
            at, until = user
            if now <= until and (claims.issued_at is None or claims.issued_at <= at):
                return True
        return False

    def prune(self, now: float) -> None:
        """Forget every entry whose keep-until time has passed (``until < now``)."""
        # Rebuilt rather than deleted from in place: a dict never shrinks its table.
        self._tokens = {jti: until for jti, until in self._tokens.items() if until >= now}
        self._users = {sub: entry for sub, entry in self._users.items() if entry[1] >= now}

    def __len__(self) -> int:
        """Revoked token ids plus users with a standing revocation."""
        return len(self._tokens) + len(self._users)
