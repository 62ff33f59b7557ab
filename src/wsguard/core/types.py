"""Message types: a name, a payload schema, the roles allowed, and a handler.

A payload schema is a frozen :class:`msgspec.Struct`, so that handlers get a
read-only value. Fields typed :class:`~wsguard.core.sanitize.Html` are cleaned as
HTML and fields typed :class:`~wsguard.core.sanitize.SafePath` are refused when
they could escape a directory; every other string is NFC-normalised with control
and bidi-override characters refused.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from wsguard.core.sanitize import Html, SafePath
from wsguard.exceptions import ConfigurationError

Handler = Callable[[Any, Any], Awaitable[None]]
"""``async def handler(ctx, message) -> None``; ``ctx`` comes from the adapter."""

TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


RoomName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class EmptyPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A payload with no fields."""


class ChatPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``chat``: ``text`` is cleaned as HTML; ``room`` defaults to ``general``."""

    text: Html
    room: RoomName = "general"


class NotificationPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``notification``: a short title and an HTML body."""

    title: str
    body: Html = Html("")


class FileUploadPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``file_upload``: metadata of a file; ``name`` may not escape its directory."""

    name: SafePath
    size: int
    content_type: str = "application/octet-stream"


class AckPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``ack``: acknowledges a server message by its id."""

    id: str


class TokenRefreshPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``token_refresh``: a new JWT for the same subject."""

    token: str


@dataclass(frozen=True, slots=True)
class MessageType:
    """A registered message type.

    Attributes:
        name: the envelope ``type``.
        schema: a frozen msgspec Struct for the payload.
        roles: roles allowed to send it; empty means any authenticated user.
        handler: the application's coroutine, or None for types the core answers.
        csrf_exempt: accepted without a ``csrfToken``.
    """

    name: str
    schema: type[msgspec.Struct]
    roles: frozenset[str]
    handler: Handler | None
    csrf_exempt: bool = False


def make_message_type(
    name: str,
    schema: type[msgspec.Struct],
    roles: Iterable[str],
    handler: Handler | None,
    csrf_exempt: bool,
) -> MessageType:
    """Check a registration and build the :class:`MessageType`.

    Raises:
        ConfigurationError: for a bad name or a schema that is not a frozen Struct.
    """
    if not TYPE_NAME.match(name):
        raise ConfigurationError(
            f"message type {name!r}", "name must match [A-Za-z][A-Za-z0-9_.:-]*"
        )
    if not (isinstance(schema, type) and issubclass(schema, msgspec.Struct)):
        raise ConfigurationError(f"message type {name!r}", "schema must be a msgspec.Struct")
    if not schema.__struct_config__.frozen:
        raise ConfigurationError(
            f"message type {name!r}", "schema must be declared with frozen=True"
        )
    return MessageType(
        name=name,
        schema=schema,
        roles=frozenset(roles),
        handler=handler,
        csrf_exempt=csrf_exempt,
    )
