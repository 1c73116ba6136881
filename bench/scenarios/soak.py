"""Soak: the full stack (as in send_message) under steady load for ten minutes, in rounds of
a minute, with the resident memory of every service sampled after each round. Reports the
memory after a warm-up round and at the end, its growth, the turns served and the errors,
and checks exactly-once billing at the end (ledger turns == committed turns).

Between rounds the bench database is VACUUMed, as autovacuum would do (the project's
PostgreSQL runs with autovacuum off).

`make soak`, or `python -m bench --only soak`. VB_SOAK_DURATION_S (600), VB_SOAK_ROUND_S
(60), VB_SOAK_CONNECTIONS (16) change the shape; --quick makes it a two-minute smoke run.

Faults are not injected here: `make soak` runs the fault suite (tests/faults, every fault
under load with its own stack and PostgreSQL server) at ten times its size before this
scenario. Other soak work hooks in through ROUND_HOOKS: each hook runs after a round, with the
stack and the round's number.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.scenarios.send_message import (
    MIB,
    FullStack,
    Plan,
    _run,
    session_pool,
)
from bench.support import rss_bytes, throwaway_database

SCENARIO = "soak"
ROUND_HOOKS: list[Callable[[FullStack, int], Awaitable[None]]] = []
MAX_SESSIONS_PER_ROUND = 5000


def _row(metric: str, value, unit: str, **labels) -> dict:
    return {"scenario": SCENARIO, "metric": metric, "value": value, "unit": unit, "labels": labels}


def _memory_mb(full: FullStack) -> float:
    """Resident memory of every service process (voice and its speech models included)."""
    return round(rss_bytes(list(full.service_pids().values())) / MIB, 1)


async def run(quick: bool = False) -> list[dict]:
    duration = float(os.environ.get("VB_SOAK_DURATION_S", "120" if quick else "600"))
    round_s = float(os.environ.get("VB_SOAK_ROUND_S", "30" if quick else "60"))
    connections = int(os.environ.get("VB_SOAK_CONNECTIONS", "16"))
    rounds = max(1, math.ceil(duration / round_s))
    plan = Plan(levels=(connections,), duration_s=round_s, warmup_s=0, turns_per_session=10)
    samples: list[tuple[float, float]] = []
    turns = errors = 0
    with tempfile.TemporaryDirectory(prefix="vb-soak-") as tmp, throwaway_database() as (url, name):
        root = Path(tmp)
        full = FullStack(root / "stack", url, name)
        try:
            await full.start()
            began = time.monotonic()
            # Warm-up: pools, caches and the interpreters settle before the first sample counts.
            await _round(full, connections, plan, root)
            samples.append((0.0, _memory_mb(full)))
            print(f"  [soak] after the warm-up round: services {samples[-1][1]} MB", flush=True)
            for number in range(1, rounds + 1):
                result = await _round(full, connections, plan, root)
                turns += result.ok
                errors += result.errors
                samples.append((round(time.monotonic() - began, 1), _memory_mb(full)))
                print(
                    f"  [soak] round {number}/{rounds}: {result.requests_per_s:.0f} req/s, "
                    f"p99 {result.latency_ms['p99']:.1f} ms, errors {result.errors}, services {samples[-1][1]} MB",
                    flush=True,
                )
                for hook in ROUND_HOOKS:
                    await hook(full, number)
            ledger, committed, _ = await full.wait_ledger()
        finally:
            await full.stop()
    start, end = samples[0][1], samples[-1][1]
    rows = [
        _row("plan", f"{rounds} rounds of {round_s:g} s at {connections} connections after a warm-up round", ""),
        _row("turns served (2xx)", turns, "count"),
        _row("errors (non-2xx + socket)", errors, "count"),
        _row("memory of all services after the warm-up", start, "MB"),
        _row("memory of all services at the end", end, "MB"),
        _row("memory of all services, highest sample", max(mb for _, mb in samples), "MB"),
        _row("memory growth", round((end - start) / start * 100, 2) if start else None, "%"),
        _row(
            "exactly-once billing after the soak (ledger turns == committed turns)",
            "yes" if ledger == committed else "NO",
            "",
        ),
        _row("memory samples (seconds, MB)", [list(sample) for sample in samples], ""),
    ]
    return rows


async def _round(full: FullStack, connections: int, plan: Plan, root: Path):
    # Between rounds, VACUUM as autovacuum would (it is off on the project's PostgreSQL).
    await asyncio.to_thread(full.vacuum)
    expected = min(MAX_SESSIONS_PER_ROUND * plan.turns_per_session, full.last_rate * plan.duration_s * 1.2)
    full.last_rate = expected / plan.duration_s
    sessions = await session_pool(full, connections, plan.duration_s, plan, root)
    return await _run(full, connections, plan.duration_s, plan, sessions)


def format_table(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        if row["metric"] == "memory samples (seconds, MB)":
            lines.append("memory samples: " + ", ".join(f"{t:g} s {mb} MB" for t, mb in row["value"]))
        else:
            lines.append(f"{row['metric']}: {row['value']} {row['unit']}".rstrip())
    return "\n".join(lines)
