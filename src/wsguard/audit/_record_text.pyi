# The C extension built by setup.py; chain.py's py_halves is the Python reference.

from wsguard.audit.events import AuditEvent

def halves(event: AuditEvent, prev_hash: str, seq: int, /) -> tuple[str, str] | None: ...
