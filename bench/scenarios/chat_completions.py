"""Benchmark: the OpenAI-compatible `POST /v1/chat/completions` through the whole stack (not a test).

The same stack as send_message (real processes on a throw-away PostgreSQL database, the same
worker counts, simulated providers with zero latency and zero failures), driven by `wrk` with
bench/wrk/chat_completions.lua: every request the same small conversation for one agent, as an
OpenAI SDK sends it, stateless (no session, no Idempotency-Key). Each request goes Envoy (the
OpenAI routes: raw body, Lua error filter) → ext_authz (auth.Check, no body to parse) →
conversation (the JSON body read and checked, the agent's config from its few-second cache,
limits, the provider call, one PostgreSQL statement queuing the usage event) → OpenAI's JSON;
the outbox relay then delivers the usage to billing. Nothing else is read or written: this is
the turn itself.

For each concurrency level: a warm-up, then a measured run. Reported per level: 2xx/s, latency
p50/p95/p99 (wrk, per request), errors, CPU seconds per 1,000 completions (every process of
the stack, and with the local PostgreSQL server). After all runs: every completion wrk got a
2xx for is in the billing ledger once (GET /v1/usage:summary turns == usage events committed).

    VB_BENCH_LEVELS=1,32,64 VB_BENCH_DURATION_S=10 python -m bench --only chat_completions
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.scenarios.send_message import FullStack, _snapshot
from bench.support import cpu_seconds_between, postmaster_pid, run_wrk, throwaway_database

SCENARIO = "chat_completions"
LUA = Path(__file__).resolve().parent.parent / "wrk" / "chat_completions.lua"
CONTENT = "Hello! Could you tell me where my order is and when it will arrive?"
WRK_THREADS = 2


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float

    @classmethod
    def from_env(cls, quick: bool) -> Plan:
        levels = os.environ.get("VB_BENCH_LEVELS", "1,16,32,64")
        return cls(
            levels=tuple(int(v) for v in levels.split(",") if v.strip()),
            duration_s=float(os.environ.get("VB_BENCH_DURATION_S", "3" if quick else "10")),
            warmup_s=float(os.environ.get("VB_BENCH_WARMUP_S", "1" if quick else "2")),
        )


def _row(metric: str, value, unit: str, **labels) -> dict:
    return {"scenario": SCENARIO, "metric": metric, "value": value, "unit": unit, "labels": labels}


def _per_1k(seconds: float, count: int) -> float | None:
    return round(seconds / count * 1000, 3) if count else None


async def _wrk(stack: FullStack, connections: int, duration_s: float):
    result = await run_wrk(
        stack.base_url,
        LUA,
        [stack.key, stack.agent, CONTENT],
        connections=connections,
        duration_s=duration_s,
        threads=WRK_THREADS,
    )
    stack.ok_total += result.ok
    stack.cut_off_bound += connections
    stack.check_alive()
    return result


async def measure(stack: FullStack, connections: int, plan: Plan) -> list[dict]:
    await _wrk(stack, connections, plan.warmup_s)
    postmaster = await asyncio.to_thread(postmaster_pid)
    _, before, _ = await stack.wait_ledger()
    await asyncio.to_thread(stack.vacuum)  # as autovacuum would between runs (see send_message)
    cpu_before, pg_before = _snapshot(stack, postmaster)
    w = await _wrk(stack, connections, plan.duration_s)
    _, after, settle = await stack.wait_ledger()
    cpu_after, pg_after = _snapshot(stack, postmaster)
    completions = after - before
    by_process: dict[str, float] = {}
    for name, tree in cpu_after.items():
        service = name.split("#", 1)[0]  # a service's workers together
        by_process[service] = by_process.get(service, 0.0) + cpu_seconds_between(cpu_before.get(name, {}), tree)
    cpu = sum(by_process.values())
    pg = cpu_seconds_between(pg_before, pg_after) if postmaster else None
    labels = {"target": "completions", "connections": connections}
    prefix = f"completions c={connections}"
    print(
        f"  [{SCENARIO}] c={connections:<3} {w.requests_per_s:8.1f} req/s  p50 {w.latency_ms['p50']:7.2f} ms  "
        f"p99 {w.latency_ms['p99']:7.2f} ms  errors {w.errors}",
        flush=True,
    )
    return [
        _row(f"{prefix} throughput (2xx)", round(w.requests_per_s, 1), "req/s", stat="throughput", **labels),
        *(
            _row(f"{prefix} latency {p}", round(w.latency_ms[p], 2), "ms", stat=p, **labels)
            for p in ("p50", "p95", "p99", "max")
        ),
        _row(f"{prefix} errors (non-2xx + socket)", w.errors, "count", stat="errors", **labels),
        _row(f"{prefix} completions in the CPU window", completions, "count", stat="turns", **labels),
        _row(f"{prefix} CPU per 1k completions", _per_1k(cpu, completions), "s", stat="cpu_per_1k", **labels),
        _row(
            f"{prefix} CPU per 1k completions incl. the PostgreSQL server",
            _per_1k(cpu + pg, completions) if pg is not None else None,
            "s",
            stat="cpu_per_1k_with_pg",
            **labels,
        ),
        *(
            _row(
                f"{prefix} CPU per 1k completions: {name}",
                _per_1k(seconds, completions),
                "s",
                stat=f"cpu:{name}",
                **labels,
            )
            for name, seconds in sorted(by_process.items(), key=lambda item: -item[1])
        ),
        *(
            [
                _row(
                    f"{prefix} CPU per 1k completions: postgresql server",
                    _per_1k(pg, completions),
                    "s",
                    stat="cpu:postgresql",
                    **labels,
                )
            ]
            if pg is not None
            else []
        ),
        _row(f"{prefix} billing caught up after run", round(settle, 2), "s", stat="settle", **labels),
    ]


async def run(quick: bool = False) -> list[dict]:
    plan = Plan.from_env(quick)
    results = [
        _row(
            "plan",
            f"levels {','.join(map(str, plan.levels))} connections; wrk {WRK_THREADS} threads; "
            f"{plan.warmup_s:g} s warm-up + {plan.duration_s:g} s measured per level; stateless completions",
            "",
            stat="plan",
        )
    ]
    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp, throwaway_database() as (url, name):
        stack = FullStack(Path(tmp) / "stack", url, name)
        try:
            await stack.start()
            for connections in plan.levels:
                results += await measure(stack, connections, plan)
            ledger, committed, _ = await stack.wait_ledger()
            cut_off = committed - stack.ok_total
            exact = ledger == committed and 0 <= cut_off <= stack.cut_off_bound
            results += [
                _row(
                    "completions: exactly-once billing under load (ledger == committed, no 2xx missing)",
                    "yes" if exact else "NO",
                    "",
                    stat="completions_exactly_once",
                ),
                _row("completions: 2xx received by wrk (warm-ups included)", stack.ok_total, "count", stat="ok"),
                _row("completions: usage events committed by conversation", committed, "count", stat="committed"),
                _row("completions: turns in the billing ledger", ledger, "count", stat="ledger"),
            ]
        finally:
            await stack.stop()
    return results


def format_table(rows: list[dict]) -> str:
    cells: dict[int, dict[str, object]] = {}
    other = []
    for row in rows:
        labels = row.get("labels") or {}
        if "connections" in labels:
            cells.setdefault(labels["connections"], {})[labels["stat"]] = row["value"]
        else:
            other.append(row)
    header = f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'CPU s/1k':>9} {'+PG s/1k':>9}"
    out = [f"({r['value']})" for r in other if r["labels"].get("stat") == "plan"]
    out += [header, "-" * len(header)]
    for c, v in sorted(cells.items()):
        out.append(
            f"{c:>5} {v.get('throughput')!s:>9} {v.get('p50')!s:>8} {v.get('p95')!s:>8} {v.get('p99')!s:>8} "
            f"{v.get('errors')!s:>7} {v.get('cpu_per_1k')!s:>9} {v.get('cpu_per_1k_with_pg')!s:>9}"
        )
    out.append("CPU s per 1k completions by process:")
    for c, v in sorted(cells.items()):
        parts = [(k.split(":", 1)[1], val) for k, val in v.items() if k.startswith("cpu:")]
        out.append(f"  c={c:<3} " + ", ".join(f"{name} {val}" for name, val in parts))
    out += [f"{r['metric']}: {r['value']}" for r in other if r["labels"].get("stat") != "plan"]
    return "\n".join(out)


if __name__ == "__main__":
    print(format_table(asyncio.run(run(quick="--quick" in sys.argv))))
