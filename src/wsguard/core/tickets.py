"""One-time connection tickets (PROTOCOL.md section 2).

``POST /auth/ticket`` with a verified bearer token calls :meth:`TicketStore.issue`;
the upgrade with ``?ticket=...`` calls :meth:`TicketStore.redeem`. A ticket is
``secrets.token_urlsafe(24)`` (192 bits), single use, and valid for ``ttl``
seconds: while ``now < issued_at + ttl``. At exactly ``issued_at + ttl`` it is
expired, matching ``expiresInMs`` (the ticket is gone at that instant). It is
also never valid past the ``exp`` of the token it was issued for.

The store keys tickets by their SHA-256 digest, so a dictionary lookup compares
digests of the client's input rather than the stored tickets themselves: the
lookup's timing says nothing usable about a stored ticket, and a memory dump does
not hold redeemable tickets.

The claims stored are those verified at issue time. The caller must still apply
the checks that can change in the meantime, chiefly revocation
(:class:`wsguard.core.revocation.Revocations`) and bans, at redemption.

Pure: no clock; callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, NamedTuple

from wsguard.exceptions import PolicyViolation

if TYPE_CHECKING:  # auth imports wsguard.config, which may import this module
    from wsguard.core.auth import Claims

__all__ = ["MAX_TICKET_LENGTH", "TICKET_BYTES", "TicketStore", "TicketsExhausted"]

TICKET_BYTES = 24  # 192 bits; PROTOCOL.md asks for at least 128
MAX_TICKET_LENGTH = 64  # a real ticket is 32 characters; anything longer is not one


class TicketsExhausted(PolicyViolation):
    """The ticket store is full of live tickets; try again shortly."""

    http_status = 503
    close_code = 1013  # "try again later"; a ticket is never issued after the upgrade


class _Ticket(NamedTuple):
    claims: Claims
    expires_at: float  # min(issue + ttl, token exp): when redeem stops accepting it
    prune_at: float  # issue + ttl: monotonic in issue order, so pruning can stop early


class TicketStore:
    """Live one-time tickets, bounded in number.

    Args:
        ttl: seconds a ticket stays valid (PROTOCOL.md: 30 s).
        max_tickets: live tickets held at most; beyond it :meth:`issue` refuses.

    Raises:
        ValueError: ``ttl`` is not a positive finite number or ``max_tickets`` < 1.
    """

    def __init__(self, ttl: float = 30.0, max_tickets: int = 100_000) -> None:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError("ttl must be a positive number of seconds")
        if max_tickets < 1:
            raise ValueError("max_tickets must be >= 1")
        self._ttl = ttl
        self._max = max_tickets
        # Issue order; OrderedDict pops from the front in O(1), unlike dict.
        self._tickets: OrderedDict[bytes, _Ticket] = OrderedDict()

    @property
    def ttl(self) -> float:
        """Seconds a ticket stays valid (for ``expiresInMs``)."""
        return self._ttl

    def issue(self, claims: Claims, now: float) -> str:
        """Create a ticket for a verified token.

        Args:
            claims: the verified claims of the bearer token.
            now: the current time.

        Returns:
            The ticket, to send to the client once; the store keeps only its digest.

        Raises:
            TicketsExhausted: ``max_tickets`` live tickets exist even after the
                expired ones were dropped (HTTP 503).
        """
        if len(self._tickets) >= self._max:
            self.prune(now)
            if len(self._tickets) >= self._max:
                raise TicketsExhausted("ticket store full")
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        prune_at = now + self._ttl
        self._tickets[_digest(ticket)] = _Ticket(claims, min(prune_at, claims.expires_at), prune_at)
        return ticket

    def redeem(self, ticket: str, now: float) -> Claims | None:
        """Spend a ticket.

        A known ticket is removed on the first attempt, even when it has expired,
        so it can never be tried twice.

        Args:
            ticket: the ``?ticket=`` value from the client.
            now: the current time.

        Returns:
            The claims it was issued for, or ``None`` when it is unknown, already
            used, or expired.
        """
        # Early refusals depend only on the client's input, never on stored tickets.
        if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_LENGTH:
            return None
        if not ticket.isascii():
            return None
        entry = self._tickets.pop(_digest(ticket), None)
        if entry is None or now >= entry.expires_at:
            return None
        return entry.claims

    def prune(self, now: float) -> None:
        """Drop expired tickets, oldest first.

        Stops at the first ticket still inside its ``ttl``, so a call costs only
        the tickets it drops. A ticket that expired early with its token stays
        until its ``ttl`` has passed; :meth:`redeem` refuses it meanwhile.
        """
        tickets = self._tickets
        while tickets:
            key, entry = next(iter(tickets.items()))
            if entry.prune_at > now:
                break
            del tickets[key]

    def __len__(self) -> int:
        """Tickets held, including expired ones not yet pruned."""
        return len(self._tickets)


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("ascii")).digest()
