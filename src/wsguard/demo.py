"""The demo app that ``wsguard serve`` runs: chat rooms.

A ``chat`` message (``{"text": str, "room": str}``, ``room`` defaulting to
``general``, ``text`` cleaned as HTML) is broadcast to every connection in the
room, the sender included (the sender's copy carries its ``id``). Each broadcast
names the sender by the token's ``sub``, never by a name the client supplied.
Every connection starts in ``general``; sending to a room joins it.
"""

from __future__ import annotations

from collections import defaultdict

from websockets.exceptions import ConnectionClosed

from wsguard.adapters.websockets import Context
from wsguard.core.decisions import Message
from wsguard.core.guard import Guard
from wsguard.core.types import ChatPayload

DEMO_ROLES = frozenset({"user", "admin"})


def install_demo(guard: Guard) -> None:
    """Register the demo's message types and hooks on ``guard``."""
    rooms: defaultdict[str, set[Context]] = defaultdict(set)

    @guard.on_connect
    async def joined(ctx: Context) -> None:
        rooms["general"].add(ctx)

    @guard.on_disconnect
    async def left(ctx: Context) -> None:
        for name in [name for name, members in rooms.items() if ctx in members]:
            rooms[name].discard(ctx)
            if not rooms[name]:
                del rooms[name]

    @guard.message("chat", schema=ChatPayload, roles=DEMO_ROLES)
    async def chat(ctx: Context, message: Message) -> None:
        payload: ChatPayload = message.payload
        members = rooms[payload.room]
        members.add(ctx)
        frame = {"room": payload.room, "text": payload.text, "from": message.session.user}
        for member in list(members):
            try:
                await member.send("chat", frame, message.id if member is ctx else None)
            except ConnectionClosed:
                members.discard(member)
