"""``python -m benchmarks``: run every benchmark, print one table and the targets.

Writes the same as JSON to ``benchmarks/results/latest.json``. The targets come
from the benchmark issue; they are printed as PASS/FAIL lines and never asserted
(the exit status is 0 unless the benchmark itself could not run).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import network, pipeline
from benchmarks.common import raise_nofile
from benchmarks.redos import worst_case_ms

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
LIBRARIES = ("websockets", "msgspec", "nh3", "PyJWT", "wsguard")


@dataclass(frozen=True)
class Target:
    key: str  # dotted path into the results
    label: str
    op: str  # ">=" or "<="
    threshold: float

    def check(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


TARGETS = (
    Target("ratios.echo_1_plain", "echo throughput guarded/bare, 1 client, plain", ">=", 0.85),
    Target("ratios.echo_50_plain", "echo throughput guarded/bare, 50 clients, plain", ">=", 0.85),
    Target("ratios.echo_50_markup", "echo throughput guarded/bare, 50 clients, markup", ">=", 0.75),
    Target("pipeline_us.valid_plain_p50", "pipeline p50 us, valid plain chat", "<=", 8.0),
    Target("pipeline_us.valid_html_p50", "pipeline p50 us, chat with HTML", "<=", 15.0),
    Target("ratios.handshake_fresh", "handshakes/s guarded/bare, fresh token", ">=", 0.70),
    Target("ratios.handshake_reuse", "handshakes/s guarded/bare, reused token", ">=", 0.85),
    Target("memory_kib_per_conn_extra", "extra RSS KiB per idle connection", "<=", 3.0),
    Target("signature_worst_ms", "signature worst case ms on 64 KiB", "<=", 5.0),
)

ECHO_SCENARIOS = (
    ("echo_1_plain", 1, False),
    ("echo_50_plain", 50, False),
    ("echo_50_markup", 50, True),
)
HANDSHAKE_SCENARIOS = (("handshake_fresh", True), ("handshake_reuse", False))
# With uvloop installed: the guarded server on uvloop against the bare one on
# asyncio's default loop (what `wsguard serve` gives a user who installed
# `wsguard[speed]`, against the server they would otherwise run).
UVLOOP_ECHO_SCENARIOS = (("echo_50_plain_uvloop", 50, False),)
UVLOOP_HANDSHAKE_SCENARIOS = (("handshake_reuse_uvloop", False),)
HANDSHAKE_WORKERS = 10


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "uvloop": _version("uvloop"),
        "git": _git(),
    }


def _git() -> dict[str, Any] | None:
    """The commit measured, and whether the tree had changes (read-only git calls)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit or None, "dirty": bool(status.strip())}


def uvloop_version() -> str | None:
    return _version("uvloop") if importlib.util.find_spec("uvloop") is not None else None


async def run_network(
    args: argparse.Namespace, log_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    uvloop = uvloop_version() is not None
    echo = [(spec, "guarded") for spec in ECHO_SCENARIOS]
    shakes = [(spec, "guarded") for spec in HANDSHAKE_SCENARIOS]
    if uvloop:
        echo += [(spec, "uvloop") for spec in UVLOOP_ECHO_SCENARIOS]
        shakes += [(spec, "uvloop") for spec in UVLOOP_HANDSHAKE_SCENARIOS]
    scenarios = {spec[0]: network.Scenario(spec[0]) for spec, _ in [*echo, *shakes]}
    for index in range(args.rounds):
        log(f"round {index + 1} of {args.rounds}: fresh servers")
        with network.Servers(log_dir, uvloop=uvloop) as servers:
            for (name, clients, markup), guarded in echo:
                await network.echo_pair_round(
                    servers.pair(guarded), scenarios[name], clients, markup, args.seconds, log
                )
            for (name, fresh), guarded in shakes:
                await network.handshake_pair_round(
                    servers.pair(guarded),
                    scenarios[name],
                    fresh,
                    HANDSHAKE_WORKERS,
                    args.seconds,
                    log,
                )
    log(f"memory: {args.connections} idle connections per server")
    memory = await network.memory_scenario(log_dir, args.connections, log)
    return {name: scenario.summary() for name, scenario in scenarios.items()}, memory


def lookup(results: dict[str, Any], key: str) -> float:
    value: Any = results
    for part in key.split("."):
        value = value[part]
    return float(value)


def _fmt_rates(summary: dict[str, Any], kind: str) -> str:
    return " ".join(f"{rate:.0f}" for rate in summary[kind]["rates"])


def _scenario_rows(
    name: str, s: dict[str, Any], what: str, unit: str
) -> list[tuple[str, str, str]]:
    """The ratio line of one network scenario, then one line per server."""
    rows = [
        (
            f"{name}: guarded/bare {what}",
            f"{s['ratio_median']:.3f}",
            f"rounds {' '.join(f'{r:.3f}' for r in s['ratios'])}; "
            f"by server CPU per op {s['cpu_ratio']}",
        )
    ]
    for kind in network.KINDS:
        k = s[kind]
        rows.append(
            (
                f"  {kind} {what}/s (median)",
                f"{k['rate_median']:.0f}",
                f"rounds {_fmt_rates(s, kind)}; server CPU {k['server_cpu_us_per_op']} "
                f"us/{unit} ({k['server_kernel_us_per_op']} in the kernel), "
                f"util {k['server_cpu_util']:.2f}; load gen util {k['loadgen_cpu_util']:.2f}",
            )
        )
    return rows


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    details = results["network"]
    for name, _, _ in ECHO_SCENARIOS + UVLOOP_ECHO_SCENARIOS:
        if name in details:
            rows += _scenario_rows(name, details[name], "round trips", "msg")
    for name, _ in HANDSHAKE_SCENARIOS + UVLOOP_HANDSHAKE_SCENARIOS:
        if name in details:
            rows += _scenario_rows(name, details[name], "handshakes", "handshake")
    if results["uvloop"] == "not installed":
        rows.append(("uvloop ratio", "-", "uvloop not installed"))
    for name, p in results["pipeline"]["paths"].items():
        rows.append((f"pipeline {name} p50 us", f"{p['p50']:.2f}", f"p99 {p['p99']:.2f} us"))
    for name, p in results["pipeline"]["stages"].items():
        if name == "fast_path_taken":
            rows.append(("  envelope fast path taken", "-", json.dumps(p)))
            continue
        rows.append((f"  stage {name} p50 us", f"{p['p50']:.2f}", f"p99 {p['p99']:.2f} us"))
    memory = results["memory"]
    rows.append(
        (
            "memory extra KiB per idle connection",
            f"{memory['kib_per_conn_extra']:.2f}",
            f"{memory['connections']} connections, median of {memory['rounds']}; "
            f"bare {memory['bare']['kib_per_conn']:.2f}, "
            f"guarded {memory['guarded']['kib_per_conn']:.2f} KiB/connection",
        )
    )
    worst = results["signatures_ms"]
    rows.append(
        (
            "signature worst ms (64 KiB)",
            f"{results['signature_worst_ms']:.3f}",
            f"worst category {max(worst, key=worst.__getitem__)}",
        )
    )
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    header = ("measure", "value", "detail")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=False)]
    line = f"{header[0]:<{widths[0]}}  {header[1]:>{widths[1]}}  {header[2]}"
    print(line)
    print("-" * len(line))
    for measure, value, detail in rows:
        print(f"{measure:<{widths[0]}}  {value:>{widths[1]}}  {detail}")


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    checked = []
    for target in TARGETS:
        value = lookup(results, target.key)
        passed = target.check(value)
        checked.append(
            {
                "key": target.key,
                "label": target.label,
                "value": value,
                "op": target.op,
                "threshold": target.threshold,
                "pass": passed,
            }
        )
        verdict = "PASS" if passed else "FAIL"
        print(f"{verdict} {target.label}: {value:.3f} {target.op} {target.threshold}")
    return checked


def timed(name: str, function: Callable[[], Any]) -> Any:
    log(f"{name} ...")
    started = time.perf_counter()
    result = function()
    log(f"{name}: {time.perf_counter() - started:.1f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (default 5)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=2000, help="idle connections")
    parser.add_argument("--iterations", type=int, default=pipeline.ITERATIONS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    raise_nofile(max(16_384, args.connections * 3))
    plan = network.PLAN
    network.pin_load_generator()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine(), "started": time.time()}
    results["settings"] = {
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "connections": args.connections,
        "iterations": args.iterations,
        "handshake_workers": HANDSHAKE_WORKERS,
        "cpus": None if plan is None else {"servers": plan[0], "load_generator": plan[1]},
    }
    signatures = timed("signatures (ReDoS)", worst_case_ms)
    results["signatures_ms"] = {k: round(v, 3) for k, v in signatures.items()}
    results["signature_worst_ms"] = round(max(signatures.values()), 3)
    results["pipeline"] = timed("pipeline", lambda: pipeline.run(args.iterations))
    results["pipeline_us"] = {
        f"{name}_{stat}": value[stat]
        for name, value in results["pipeline"]["paths"].items()
        for stat in ("p50", "p99")
    }
    with tempfile.TemporaryDirectory(prefix="wsguard-bench-") as tmp:
        scenarios, memory = timed("network", lambda: asyncio.run(run_network(args, Path(tmp))))
    results["network"] = scenarios
    results["ratios"] = {name: scenarios[name]["ratio_median"] for name in scenarios}
    results["server_cpu_us_per_op"] = {
        name: {kind: scenarios[name][kind]["server_cpu_us_per_op"] for kind in network.KINDS}
        for name in scenarios
    }
    results["memory"] = memory
    results["memory_kib_per_conn_extra"] = round(memory["kib_per_conn_extra"], 3)
    results["uvloop"] = uvloop_version() or "not installed"
    results["duration_s"] = round(time.perf_counter() - started, 1)
    print()
    print_table(table_rows(results))
    print()
    if results["uvloop"] == "not installed":
        print("uvloop not installed: no guarded-with-uvloop ratio")
    results["targets"] = check_targets(results)
    failed = sum(not t["pass"] for t in results["targets"])
    print(f"{len(TARGETS) - failed}/{len(TARGETS)} targets met; total {results['duration_s']} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
