"""Names for the domain strings that flow through wsguard."""

from __future__ import annotations

from typing import NewType

SessionId = NewType("SessionId", str)
"""Random id of one guarded connection, sent in the welcome frame."""

UserId = NewType("UserId", str)
"""The ``sub`` claim of a verified token."""

RequestId = NewType("RequestId", str)
"""Random id that ties an error sent to a client to the server's log line."""

MessageTypeName = NewType("MessageTypeName", str)
"""The ``type`` of a client message, as registered with the guard."""
