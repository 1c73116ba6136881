"""`make bench` / `python -m bench [--only NAME ...] [--quick]`: runs the benchmark scenarios
on this machine, one after the other, prints a table and writes the results as JSON to
bench/results/<UTC timestamp>.json and bench/results/latest.json (with the machine, the
versions and the git commit, so that runs can be compared). Numbers, not pass/fail: the exit
status is non-zero only when a scenario could not run."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

SCENARIOS = ("send_message", "chat_completions", "usage_summary", "console_usage", "voice")
# Run only when named (`--only soak`, `make soak`): ten minutes of load.
OPT_IN = ("soak",)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# --quick: smaller and shorter, for a smoke run (set before the scenario modules are imported,
# as usage_summary reads its sizes at import time; an explicit setting wins).
QUICK_ENV = {"VB_BENCH_USAGE_EVENTS": "100000", "VB_BENCH_RUNS": "3"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=SCENARIOS + OPT_IN,
        metavar="NAME",
        help=f"run only these scenarios (of: {', '.join(SCENARIOS + OPT_IN)})",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs and a smaller data set (a smoke run)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON file")
    return parser.parse_args(argv)


async def run_scenario(name: str, quick: bool) -> list[dict]:
    module = importlib.import_module(f"bench.scenarios.{name}")
    if "quick" in inspect.signature(module.run).parameters:
        return await module.run(quick=quick)
    return await module.run()


def format_generic(rows: list[dict]) -> str:
    width = max((len(r["metric"]) for r in rows), default=6)
    lines = [f"{'metric':<{width}}  {'value':>10}  unit", "-" * (width + 18)]
    lines += [f"{r['metric']:<{width}}  {r['value']!s:>10}  {r['unit']}" for r in rows]
    return "\n".join(lines)


def format_scenario(name: str, rows: list[dict]) -> str:
    module = sys.modules.get(f"bench.scenarios.{name}")
    formatter = getattr(module, "format_table", None)
    return formatter(rows) if formatter else format_generic(rows)


def describe_machine(machine: dict) -> str:
    commit = (machine.get("git_commit") or "?")[:12] + (" (dirty)" if machine.get("git_dirty") else "")
    envoy = machine.get("envoy") or "?"
    envoy = envoy.split("/")[1] if envoy.count("/") >= 2 else envoy  # <sha>/1.40.0/Clean/RELEASE/BoringSSL
    load = ", ".join(str(v) for v in machine.get("load_average") or ())
    return (
        f"{machine.get('cores_usable')} cores ({machine.get('cpu_model')}), {machine.get('memory_gib')} GiB, "
        f"Python {machine.get('python')}, Envoy {envoy}, PostgreSQL {machine.get('postgresql')}, "
        f"{machine.get('wrk')}, commit {commit}, load average {load}"
    )


def save(document: dict, started: datetime) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    text = json.dumps(document, indent=2, default=str) + "\n"
    path.write_text(text)
    latest = RESULTS_DIR / "latest.json"
    tmp = latest.with_name(f".latest.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, latest)
    return path


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in SCENARIOS + OPT_IN if n in (args.only or SCENARIOS)]
    if args.quick:
        for key, value in QUICK_ENV.items():
            os.environ.setdefault(key, value)
    from bench.support import machine_info  # after the environment is settled

    started = datetime.now(UTC)
    machine = machine_info()
    print(f"VocalBridge benchmarks — {started:%Y-%m-%d %H:%M:%S} UTC{' (quick)' if args.quick else ''}")
    print(describe_machine(machine), flush=True)
    needs_wrk = [name for name in ("send_message", "chat_completions") if name in names]
    if not shutil.which("wrk") and needs_wrk:
        print(f"warning: wrk is not installed (apt-get install -y wrk); {', '.join(needs_wrk)} will fail", flush=True)

    results: list[dict] = []
    status: dict[str, dict] = {}
    tables: list[str] = []
    for name in names:
        print(f"\n== {name} …", flush=True)
        began = time.perf_counter()
        try:
            rows = await run_scenario(name, args.quick)
        except Exception as exc:  # noqa: BLE001 - report it, run the other scenarios
            traceback.print_exc()
            seconds = time.perf_counter() - began
            status[name] = {
                "status": "failed",
                "duration_s": round(seconds, 1),
                "error": f"{type(exc).__name__}: {exc}",
            }
            tables.append(f"== {name}: FAILED after {seconds:.0f} s: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - began
        status[name] = {"status": "ok", "duration_s": round(seconds, 1), "error": None}
        results += rows
        tables.append(f"== {name} ({seconds:.0f} s)\n{format_scenario(name, rows)}")

    if results:
        # The performance targets, judged from this run's numbers (issue 8; bench/targets.py).
        from bench import targets

        judged = targets.judge(results)
        results += judged
        tables.append(f"== targets\n{targets.format_table(judged)}")

    finished = datetime.now(UTC)
    print("\n" + "=" * 100)
    print(f"VocalBridge benchmarks — {describe_machine(machine)}")
    for table in tables:
        print("\n" + table)
    document = {
        "schema_version": 1,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_s": round((finished - started).total_seconds(), 1),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "quick": args.quick,
        "environment": {k: v for k, v in os.environ.items() if k.startswith("VB_BENCH_")},
        "machine": machine,
        "scenarios": status,
        "results": results,
    }
    if not args.no_save:
        path = save(document, started)
        print(
            f"\nresults: {os.path.relpath(path)} (and {os.path.relpath(RESULTS_DIR / 'latest.json')}); "
            f"total {document['duration_s']:.0f} s"
        )
    return 1 if any(s["status"] != "ok" for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
