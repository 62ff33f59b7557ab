"""The two servers under test, each run in its own process.

``python -m benchmarks.servers bare|guarded [--loop asyncio|uvloop] [--audit PATH] [--profile OUT]``

* ``bare``: a plain ``websockets`` echo server (every text message sent back).
* ``guarded``: the same behind wsguard with everything on: JWT at the handshake,
  envelope, CSRF, roles, rate limits (high), sanitization, attack signatures,
  metrics and the audit log (SQLite). ``echo`` (plain text) and ``echo_html``
  (an ``Html`` field) reply their payload.

The process listens on a free port of 127.0.0.1 and prints ``ready <port>``.
It then reads commands on stdin: ``cpu`` answers ``cpu <seconds>`` (its own
``time.process_time()``, every thread included); ``quit`` or end of input stops
it, after ``bye <seconds>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve

from benchmarks.common import HOST, AdminOnly, EchoMarkup, EchoPlain, guarded_config, raise_nofile
from wsguard.adapters.websockets import Context
from wsguard.adapters.websockets import serve as guarded_serve
from wsguard.cli import event_loop_factory
from wsguard.core.decisions import Message
from wsguard.runtime import build_runtime


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Answer ``cpu`` from this thread; set ``stop`` on ``quit`` or end of input."""
    for line in sys.stdin:
        command = line.strip()
        if command == "cpu":
            _say(f"cpu {time.process_time():.6f}")
        elif command == "quit":
            break
    loop.call_soon_threadsafe(stop.set)


async def _echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def _run_bare(stop: asyncio.Event) -> None:
    async with websockets_serve(_echo, HOST, 0, compression=None) as server:
        _say(f"ready {server.sockets[0].getsockname()[1]}")
        await stop.wait()


async def _run_guarded(stop: asyncio.Event, audit_path: Path) -> None:
    runtime = build_runtime(guarded_config(audit_path))
    guard = runtime.guard

    @guard.message("echo", schema=EchoPlain, roles={"user"})
    async def echo(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "echo", message.payload)

    @guard.message("echo_html", schema=EchoMarkup, roles={"user"})
    async def echo_html(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "echo_html", message.payload)

    @guard.message("admin_only", schema=AdminOnly, roles={"admin"})
    async def admin_only(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "admin_only", message.payload)

    try:
        async with guarded_serve(guard, HOST, 0) as service:
            _say(f"ready {service.port}")
            await stop.wait()
    finally:
        runtime.close()


async def _main(kind: str, audit_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    if kind == "bare":
        await _run_bare(stop)
    else:
        await _run_guarded(stop, audit_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    parser.add_argument("kind", choices=("bare", "guarded"))
    parser.add_argument("--audit", type=Path, help="the audit log file (guarded)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="wsguard-bench-") as tmp:
        audit_path: Path = args.audit or Path(tmp) / "audit.db"
        profiler: Any = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        try:
            factory = event_loop_factory(args.loop)  # as `wsguard serve --loop` does
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(_main(args.kind, audit_path))
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
    _say(f"bye {time.process_time():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
