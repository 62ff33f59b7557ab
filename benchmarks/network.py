"""Network benchmarks: echo and handshakes in alternating rounds, and memory.

The servers run in their own processes (:mod:`benchmarks.servers`); this
process is the load generator. Each round starts a fresh pair of servers and
runs every scenario on it; each scenario reports every round's ratio
guarded/bare and the median. Fresh processes per round because one server
process can be 30 % faster or slower than the next for its whole life (seen: a
bare server at 16 or 20 us per echoed message, the same code), so that one pair
must not decide the whole run.

Within a round, each server's time is cut into slices run in the order of
:data:`SLICE_ORDER` (A B B A B A A B): the speed of this machine drifts by 20 %
from one few-second stretch to the next, and in this order a drift that is
linear or quadratic in time falls on both servers alike. A round's figures sum
its slices.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.common import MARKUP_TEXT, PATH, PLAIN_TEXT, make_token
from benchmarks.wsclient import RawClient, client_frame, connect

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("bare", "guarded")
SLICE_ORDER = ("bare", "guarded", "guarded", "bare", "guarded", "bare", "bare", "guarded")
SLICES_PER_KIND = SLICE_ORDER.count("bare")
# A dummy CSRF token of the same length, so that both servers get the same bytes.
DUMMY_CSRF = "x" * 32


def cpu_plan() -> tuple[int, int] | None:
    """``(server CPU, load generator CPU)``: the last and the first this process may use.

    Every server runs on the same CPU and the load generator on another, so
    that bare and guarded get the same core. Unpinned, the scheduler placed a
    server on either core and kept it there, and one of this VM's two cores is
    faster: the bare server ran at 16 or 20 us per echoed message depending on
    where it landed. ``None`` with fewer than two CPUs (nothing is pinned then).
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-1], cpus[0]) if len(cpus) >= 2 else None


# Decided once, before this process pins itself and sees only its own CPU.
PLAN = cpu_plan()


def pin_load_generator() -> None:
    """Pin this process to the load generator's CPU of :data:`PLAN`."""
    if PLAN is not None:
        os.sched_setaffinity(0, {PLAN[1]})


def _pin_server(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


class ServerProcess:
    """A server under test in its own process, driven through its stdin and stdout."""

    def __init__(self, kind: str, log_dir: Path, *extra: str) -> None:
        self.kind = kind
        self.log_path = log_dir / f"{kind}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        plan = PLAN
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", kind, *extra],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            preexec_fn=None if plan is None else _pin_server(plan[0]),  # noqa: PLW1509
        )
        line = self._read_line(30.0)
        if not line.startswith("ready "):
            self.stop()
            raise RuntimeError(f"{kind} server did not start: {line!r}; see {self.log_path}")
        self.port = int(line.split()[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, timeout: float) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.kind} server did not answer in {timeout} s")
        return stdout.readline().strip()

    def cpu(self) -> float:
        """The server process's CPU time so far, in seconds (all its threads)."""
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write("cpu\n")
        stdin.flush()
        line = self._read_line(10.0)
        if not line.startswith("cpu "):
            raise RuntimeError(f"{self.kind} server answered {line!r}")
        return float(line.split()[1])

    def kernel_s(self) -> float:
        """The server process's system (kernel) CPU time so far, in seconds.

        Reported beside the total: asyncio reads sockets with recv(256 KiB), and
        in some runs glibc serves every such buffer from mmap, which shows as
        kernel time per message (the guarded server reads 64 KiB; the bare one
        keeps asyncio's default, as its users would).
        """
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[12]) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        """VmRSS of the server process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        """Ask the process to quit; kill it if it does not within 20 s."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(20)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


class Servers:
    """The bare and the guarded server; both stopped on exit, even on error.

    With ``uvloop``, also a guarded server on uvloop, under the key ``"uvloop"``:
    :meth:`pair` with it compares guarded-on-uvloop with bare-on-asyncio.
    """

    def __init__(self, log_dir: Path, *, uvloop: bool = False) -> None:
        self.log_dir = log_dir
        self.uvloop = uvloop
        self.by_kind: dict[str, ServerProcess] = {}

    def __enter__(self) -> Servers:
        try:
            for kind in KINDS:
                self.by_kind[kind] = ServerProcess(kind, self.log_dir, "--loop", "asyncio")
            if self.uvloop:
                self.by_kind["uvloop"] = ServerProcess("guarded", self.log_dir, "--loop", "uvloop")
        except BaseException:
            self.stop()
            raise
        return self

    def pair(self, guarded: str = "guarded") -> dict[str, ServerProcess]:
        """The bare server and the guarded one named ``guarded``, by role."""
        return {"bare": self.by_kind["bare"], "guarded": self.by_kind[guarded]}

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __getitem__(self, kind: str) -> ServerProcess:
        return self.by_kind[kind]

    def stop(self) -> None:
        for server in self.by_kind.values():
            server.stop()


@dataclass
class Round:
    kind: str
    rate: float  # per second
    server_cpu_s: float
    client_cpu_s: float
    seconds: float
    count: int
    server_kernel_s: float = 0.0


@dataclass
class Scenario:
    name: str
    rounds: list[Round] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """guarded/bare for each pair of rounds."""
        bare = [r.rate for r in self.rounds if r.kind == "bare"]
        guarded = [r.rate for r in self.rounds if r.kind == "guarded"]
        return [g / b for b, g in zip(bare, guarded, strict=True) if b > 0]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ratios": [round(r, 4) for r in self.ratios()]}
        ratios = self.ratios()
        out["ratio_median"] = round(statistics.median(ratios), 4) if ratios else None
        for kind in KINDS:
            rounds = [r for r in self.rounds if r.kind == kind]
            count = sum(r.count for r in rounds)
            out[kind] = {
                "rates": [round(r.rate, 1) for r in rounds],
                "rate_median": round(statistics.median(r.rate for r in rounds), 1),
                "server_cpu_us_per_op": round(sum(r.server_cpu_s for r in rounds) / count * 1e6, 2)
                if count
                else None,
                "server_kernel_us_per_op": round(
                    sum(r.server_kernel_s for r in rounds) / count * 1e6, 2
                )
                if count
                else None,
                "server_cpu_util": round(
                    sum(r.server_cpu_s for r in rounds) / sum(r.seconds for r in rounds), 3
                ),
                "loadgen_cpu_util": round(
                    sum(r.client_cpu_s for r in rounds) / sum(r.seconds for r in rounds), 3
                ),
            }
        bare_cpu, guarded_cpu = (out[kind]["server_cpu_us_per_op"] for kind in KINDS)
        # The same comparison by server CPU per operation: immune to a saturated load generator.
        out["cpu_ratio"] = round(bare_cpu / guarded_cpu, 4) if bare_cpu and guarded_cpu else None
        return out


def _merge(kind: str, slices: list[Round]) -> Round:
    """One round made of a server's slices: counts, times and CPU summed."""
    seconds = sum(r.seconds for r in slices)
    count = sum(r.count for r in slices)
    return Round(
        kind,
        count / seconds,
        sum(r.server_cpu_s for r in slices),
        sum(r.client_cpu_s for r in slices),
        seconds,
        count,
        sum(r.server_kernel_s for r in slices),
    )


def _envelope(kind: str, text: str, csrf: str) -> bytes:
    message = {"type": kind, "id": "m-1", "payload": {"text": text}, "csrfToken": csrf}
    return json.dumps(message, separators=(",", ":")).encode()


async def _open_echo_clients(
    server: ServerProcess, count: int, message_type: str, text: str
) -> list[tuple[RawClient, bytes]]:
    guarded = server.kind == "guarded"
    clients: list[tuple[RawClient, bytes]] = []
    for _ in range(count):
        client, welcome = await connect(server.port, make_token(), path=PATH, welcome=guarded)
        csrf = json.loads(welcome)["payload"]["csrfToken"] if welcome else DUMMY_CSRF
        clients.append((client, client_frame(0x1, _envelope(message_type, text, csrf))))
    return clients


async def _spin(until: float) -> None:
    """Keep this process's event loop from sleeping until ``until``.

    On this VM, a send that wakes a sleeping process on the other core costs
    the *sender* an inter-processor interrupt, several microseconds of kernel
    time. A load generator that sleeps between replies thus charges the server
    for waking it, the more so the slower the server (its clients sleep more):
    with the markup messages, 11 us of the guarded server's kernel time per
    message against 6 us for the bare one. A real client is on another machine
    and costs the server no such wake-up; a spinning load generator is never
    asleep, so neither server pays for it.
    """
    while time.perf_counter() < until:
        await asyncio.sleep(0)


class _Meter:
    """A server's and this process's CPU, and the clock, from :meth:`start` to :meth:`stop`."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    def start(self) -> None:
        self.kernel0 = self.server.kernel_s()
        self.cpu0, self.client0 = self.server.cpu(), time.process_time()
        self.t0 = time.perf_counter()

    def stop(self, count: int) -> Round:
        t1, client1, cpu1 = time.perf_counter(), time.process_time(), self.server.cpu()
        seconds = t1 - self.t0
        return Round(
            self.server.kind,
            count / seconds,
            cpu1 - self.cpu0,
            client1 - self.client0,
            seconds,
            count,
            self.server.kernel_s() - self.kernel0,
        )


async def _echo_round(
    server: ServerProcess, clients: list[tuple[RawClient, bytes]], seconds: float, warmup: float
) -> Round:
    counter = [0]

    def on_echo() -> None:
        counter[0] += 1

    spinner = asyncio.ensure_future(_spin(time.perf_counter() + warmup + seconds + 1.0))
    for client, frame in clients:
        client.start_echo(frame, on_echo)
    await asyncio.sleep(warmup)
    meter = _Meter(server)
    meter.start()
    count0 = counter[0]
    await asyncio.sleep(seconds)
    result = meter.stop(counter[0] - count0)
    spinner.cancel()
    for client, _ in clients:
        client.stop_echo()
    await asyncio.sleep(0.2)  # let the replies in flight arrive
    return result


async def echo_pair_round(
    servers: Mapping[str, ServerProcess],
    scenario: Scenario,
    clients_per_server: int,
    markup: bool,
    seconds: float,
    log: Callable[[str], None],
) -> None:
    """One round of echo round trips on each server, in slices, after a warm-up."""
    message_type, text = ("echo_html", MARKUP_TEXT) if markup else ("echo", PLAIN_TEXT)
    opened = {
        kind: await _open_echo_clients(servers[kind], clients_per_server, message_type, text)
        for kind in KINDS
    }
    try:
        for kind in KINDS:  # warm-up, not counted
            await _echo_round(servers[kind], opened[kind], 0.5, 0.2)
        slices: dict[str, list[Round]] = {kind: [] for kind in KINDS}
        for kind in SLICE_ORDER:
            part = await _echo_round(servers[kind], opened[kind], seconds / SLICES_PER_KIND, 0.1)
            slices[kind].append(part)
        for kind in KINDS:
            result = _merge(kind, slices[kind])
            scenario.rounds.append(result)
            log(f"  {scenario.name} {kind:<7} {result.rate:>9.0f}/s")
    finally:
        for clients in opened.values():
            for client, _ in clients:
                client.abort()
    await asyncio.sleep(0.2)


def _reused_token() -> Iterator[str]:
    return itertools.repeat(make_token())


async def _handshake_worker(
    port: int, welcome: bool, tokens: Iterator[str], deadline: float, counter: list[int]
) -> None:
    while time.perf_counter() < deadline:
        client, _ = await connect(port, next(tokens), path=PATH, welcome=welcome, timeout=10)
        client.close()
        try:
            async with asyncio.timeout(10):
                await client.closed
        finally:
            client.abort()
        counter[0] += 1


async def _handshake_round(
    server: ServerProcess, workers: int, pools: list[Iterator[str]], seconds: float
) -> Round:
    counter = [0]
    guarded = server.kind == "guarded"
    spinner = asyncio.ensure_future(_spin(time.perf_counter() + seconds + 1.0))
    meter = _Meter(server)
    meter.start()
    deadline = meter.t0 + seconds
    await asyncio.gather(
        *(
            _handshake_worker(server.port, guarded, pools[i], deadline, counter)
            for i in range(workers)
        )
    )
    result = meter.stop(counter[0])
    spinner.cancel()
    return result


class TokenPool:
    """Fresh tokens made ahead, so that signing them is not timed; then made on demand."""

    def __init__(self, count: int) -> None:
        self._tokens = [make_token() for _ in range(count)]

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return self._tokens.pop() if self._tokens else make_token()


async def handshake_pair_round(
    servers: Mapping[str, ServerProcess],
    scenario: Scenario,
    fresh: bool,
    workers: int,
    seconds: float,
    log: Callable[[str], None],
    expected_rate: float = 5000.0,
) -> None:
    """One round of handshakes (connect, upgrade, welcome, close) on each server, in slices.

    ``fresh``: a new token for every handshake (signed before the round, so
    that signing is not timed); otherwise each worker reuses one. Both servers
    get the same header; the bare one ignores it.
    """
    for kind in KINDS:  # warm-up
        warm = [_reused_token() for _ in range(workers)]
        await _handshake_round(servers[kind], workers, warm, 0.3)
    slices: dict[str, list[Round]] = {kind: [] for kind in KINDS}
    part_seconds = seconds / SLICES_PER_KIND
    for kind in SLICE_ORDER:
        if fresh:
            per_worker = int(expected_rate * part_seconds * 1.2 / workers) + 10
            pools: list[Iterator[str]] = [TokenPool(per_worker) for _ in range(workers)]
        else:
            pools = [_reused_token() for _ in range(workers)]
        slices[kind].append(await _handshake_round(servers[kind], workers, pools, part_seconds))
    for kind in KINDS:
        result = _merge(kind, slices[kind])
        scenario.rounds.append(result)
        log(f"  {scenario.name} {kind:<7} {result.rate:>9.0f}/s")


async def _open_idle(server: ServerProcess, count: int, parallel: int) -> list[RawClient]:
    token = make_token()
    guarded = server.kind == "guarded"
    clients: list[RawClient] = []
    semaphore = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with semaphore:
            client, _ = await connect(server.port, token, path=PATH, welcome=guarded)
            clients.append(client)

    try:
        await asyncio.gather(*(one() for _ in range(count)))
    except BaseException:
        for client in clients:
            client.abort()
        raise
    return clients


async def _memory_round(
    log_dir: Path, connections: int, log: Callable[[str], None]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with Servers(log_dir) as servers:
        for kind in KINDS:  # warm-up: load the code paths, then let go
            for client in await _open_idle(servers[kind], 50, 50):
                client.abort()
        await asyncio.sleep(1.0)
        for kind in KINDS:
            server = servers[kind]
            before = server.rss_kib()
            clients = await _open_idle(server, connections, 100)
            await asyncio.sleep(1.0)
            after = server.rss_kib()
            for client in clients:
                client.abort()
            per_conn = (after - before) / connections
            result[kind] = {
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_conn": per_conn,
            }
            log(f"  memory {kind:<7} {before} KiB -> {after} KiB: {per_conn:.2f} KiB/connection")
            await asyncio.sleep(0.5)
    result["kib_per_conn_extra"] = (
        result["guarded"]["kib_per_conn"] - result["bare"]["kib_per_conn"]
    )
    return result


async def memory_scenario(
    log_dir: Path, connections: int, log: Callable[[str], None], rounds: int = 3
) -> dict[str, Any]:
    """RSS growth of fresh servers with ``connections`` idle connections each.

    RSS moves in allocator-sized steps, so one pair of servers differs from the
    next by about 1 KiB per connection: ``rounds`` pairs of fresh servers, and
    the round with the median extra is reported (all of them under ``rounds``).
    """
    results = [await _memory_round(log_dir, connections, log) for _ in range(rounds)]
    results.sort(key=lambda r: float(r["kib_per_conn_extra"]))
    median: dict[str, Any] = dict(results[len(results) // 2])
    median["connections"] = connections
    median["rounds"] = [round(float(r["kib_per_conn_extra"]), 3) for r in results]
    return median
