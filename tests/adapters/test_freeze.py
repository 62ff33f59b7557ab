"""The objects alive when the first server starts leave the collector's full passes.

Each check runs in a fresh interpreter: the freeze happens once per process,
and the test process froze its own start-up state (see ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, gc, json, sys, weakref

from websockets.asyncio.client import connect

from tests.conftest import make_config, make_token
from wsguard.adapters.websockets import serve
from wsguard.core.guard import Guard
from wsguard.demo import install_demo

FREEZE = sys.argv[1] == "freeze"


class Node:
    pass


async def chat(port: int, user: str) -> dict:
    url = f"ws://127.0.0.1:{port}/ws"
    headers = {"Authorization": f"Bearer {make_token(user)}"}
    async with connect(url, additional_headers=headers, open_timeout=5) as ws:
        welcome = json.loads(await ws.recv())
        await ws.send(json.dumps({
            "type": "chat", "id": "m1", "payload": {"text": "<b>hi</b><script>x()</script>"},
            "csrfToken": welcome["payload"]["csrfToken"],
        }))
        return json.loads(await ws.recv())


async def main() -> dict:
    # A reference cycle made before the server starts, kept alive by `kept`.
    kept = Node()
    kept.self = kept
    # One made before, already garbage: the freeze must collect it, not keep it.
    # Made old first (it survives a full collection), so that no young
    # collection would free it by the way.
    dropped = Node()
    dropped.self = dropped
    dropped_ref = weakref.ref(dropped)
    gc.collect()
    del dropped
    guard = Guard(make_config())
    install_demo(guard)
    before = gc.get_freeze_count()
    async with serve(guard, "127.0.0.1", 0, freeze_startup=FREEZE) as service:
        after_start = gc.get_freeze_count()
        reply = await chat(service.port, "alice")
        # A cycle made while serving: the collector still frees it.
        late = Node()
        late.self = late
        late_ref = weakref.ref(late)
        del late
        gc.collect()
        async with serve(guard, "127.0.0.1", 0, freeze_startup=FREEZE) as second:
            second_reply = await chat(second.port, "bob")
            after_second = gc.get_freeze_count()
            second_walked = any(o is second for o in gc.get_objects())
    tracked = {id(o) for o in gc.get_objects()}
    return {
        "before": before,
        "after_start": after_start,
        "after_second": after_second,
        "second_walked": second_walked,
        "guard_walked": id(guard) in tracked,
        "kept_walked": id(kept) in tracked,
        "dropped_alive": dropped_ref() is not None,
        "late_alive": late_ref() is not None,
        "reply": reply,
        "second_reply": second_reply,
    }


print(json.dumps(asyncio.run(main())))
"""


def run(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def served(reply: object, user: str) -> bool:
    return reply == {
        "type": "chat",
        "id": "m1",
        "payload": {"room": "general", "text": "<b>hi</b>", "from": user},
    }


def test_the_first_server_freezes_what_is_alive_and_serves_as_before() -> None:
    result = run("freeze")
    assert result["before"] == 0
    assert isinstance(result["after_start"], int) and result["after_start"] > 1000
    # Once per process: a second server freezes nothing more (the count may
    # fall: reference counting still frees frozen objects), and is walked.
    assert result["after_second"] <= result["after_start"]
    assert result["second_walked"] is True
    # The guard and the long-lived cycle are out of the collector's walk.
    assert result["guard_walked"] is False
    assert result["kept_walked"] is False
    # Garbage made before the start was collected first, not frozen for good.
    assert result["dropped_alive"] is False
    # A cycle made while serving is still collected.
    assert result["late_alive"] is False
    assert served(result["reply"], "alice")
    assert served(result["second_reply"], "bob")


def test_freeze_startup_false_leaves_the_collector_alone() -> None:
    result = run("keep")
    assert result["after_start"] == result["after_second"] == 0
    assert result["second_walked"] is True
    assert result["guard_walked"] is True
    assert result["kept_walked"] is True
    assert served(result["reply"], "alice")
    assert served(result["second_reply"], "bob")
