"""wsguard's exceptions.

Our exception hierarchy:

* :exc:`WSGuardError`
    * :exc:`ConfigurationError`: a bad setting; raised only at startup.
    * :exc:`PolicyViolation`: the peer broke a rule; carries its wire consequence.
        * :exc:`AuthenticationFailed` (HTTP 401)
        * :exc:`OriginRejected` (HTTP 403)

Each :exc:`PolicyViolation` carries the HTTP status used when it happens during
the handshake and the close code used when it happens after the upgrade. Its
``reason`` is for the server log only: the peer gets a fixed public text.
"""

from __future__ import annotations

from typing import ClassVar


class WSGuardError(Exception):
    """Base class for every wsguard error."""


class ConfigurationError(WSGuardError, ValueError):
    """A setting is missing or invalid.

    Args:
        setting: the setting's name as written in the TOML file.
        problem: why it is refused, in a few words.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(setting, problem)
        self.setting = setting
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.setting}: {self.problem}"


class PolicyViolation(WSGuardError):
    """The peer broke a security rule.

    Args:
        reason: a short description for the server log; never sent to the peer.
    """

    http_status: ClassVar[int] = 400
    close_code: ClassVar[int] = 1008

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class AuthenticationFailed(PolicyViolation):
    """No credential, or the credential failed verification."""

    http_status = 401
    close_code = 4401


class OriginRejected(PolicyViolation):
    """The ``Origin`` header is not on the allow list, is ``null``, or is missing."""

    http_status = 403
    close_code = 4403
