"""The sans-I/O policy core: plain data in, decisions out.

Nothing in this package touches a socket, an event loop, the environment or the
wall clock: time comes from an injected :class:`~wsguard.core.clock.Clock`.
"""
