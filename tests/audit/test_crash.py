"""Crash safety: SIGKILL during a flood; the file verifies up to its last commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.audit import KEY
from wsguard.audit import verify_file

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from wsguard.audit import AuditConfig, AuditEvent, AuditWriter
    from wsguard.core.clock import SystemClock

    writer = AuditWriter(AuditConfig(path=sys.argv[1]), bytes.fromhex(sys.argv[2]), SystemClock())
    announced = False
    i = 0
    while True:
        i += 1
        writer.emit(AuditEvent("handshake_refused", "warning", time.time(),
                               client_ip="198.51.100.%d" % (i % 250), details={"reason": "rate"}))
        if i % 200 == 0:
            time.sleep(0.001)
        if not announced and writer.written >= 500:
            print("ready", flush=True)
            announced = True
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_during_a_flood_leaves_a_verifiable_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(path), KEY.hex()],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    result = verify_file(path, KEY, allow_unsealed=True)
    assert result.ok, result.problem
    assert result.count >= 500
