"""Benchmark: the web console's usage page on a tenant with 1,000,000 usage events (not a test).

Starts the stack behind `make run` (auth, agents, billing, the console's static server and
Envoy) on a throw-away PostgreSQL database, creates a tenant through the API, bulk-loads its
ledger with usage_summary's loader (1,000,000 events over a year, plus other tenants' rows),
then opens the console's usage page in Debian's Chromium (web/bench/usage-page.mjs, Playwright)
with the tenant's key, a fresh browser context per run, and times navigation → the totals, the
four charts and the first page of events rendered, and until the provider performance table
(the costliest aggregate, loaded beside the rest) is rendered too. Two ranges: the page's default
(the last 30 days) and the whole year.

    python -m bench.scenarios.console_usage          (from the repository root; `make web` first)
    VB_BENCH_USAGE_EVENTS=200000 python -m …         (a smaller ledger)

`run()` returns rows {scenario, metric, value, unit} for the bench suite.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.scenarios import usage_summary
from vocalbridge_devstack.seed import http_json
from vocalbridge_devstack.stack import REPO_ROOT, Stack, StackConfig

SCENARIO = "console_usage"
WEB = REPO_ROOT / "web"
RUNS = int(os.environ.get("VB_BENCH_RUNS", "7"))
SERVICES = ("auth", "agents", "billing")


def _browser_samples(base_url: str, key: str, runs: int, day_range: tuple[str, str] | None) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed to drive the browser")
    args = [node, "bench/usage-page.mjs", base_url, key, str(runs), *(day_range or ())]
    result = subprocess.run(args, cwd=WEB, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the usage page did not render:\n{result.stderr[-4000:]}")
    print(result.stderr.strip(), flush=True)
    samples: list[dict] = json.loads(result.stdout.strip().splitlines()[-1])["samples"]
    return samples


def _rows(name: str, samples: list[float]) -> list[dict]:
    return [
        {"scenario": SCENARIO, "metric": f"{name} {stat}", "value": round(value), "unit": "ms"}
        for stat, value in (("min", min(samples)), ("p50", statistics.median(samples)), ("max", max(samples)))
    ]


async def run(quick: bool = False) -> list[dict]:
    if not (WEB / "dist" / "index.html").is_file():
        raise RuntimeError("the console is not built: run `make web`")
    runs = 3 if quick else RUNS
    now = datetime.now(UTC).replace(microsecond=0)
    results: list[dict] = []
    with usage_summary.throwaway_database() as url, tempfile.TemporaryDirectory() as tmp:
        stack = Stack(
            StackConfig.with_free_ports(
                data_dir=Path(tmp) / "var",
                log_dir=Path(tmp) / "logs",
                database_url=url,
                services=SERVICES,
                restart_children=False,
                extra_env={"VB_LOG_LEVEL": "WARNING"},
            )
        )
        await stack.start()
        try:
            status, created = http_json(
                stack.base_url, "POST", "/v1/tenants", stack.operator_key, {"displayName": "Big"}
            )
            if status != 200:
                raise RuntimeError(f"creating the tenant failed: HTTP {status} {created}")
            tenant_id = created["tenant"]["name"].removeprefix("tenants/")
            key = created["apiKey"]["secret"]
            # The stack migrated billing's schema; the ledger goes in as the database owner.
            timings = await asyncio.to_thread(usage_summary.load, url, now, tenant_id)
            events = usage_summary.EVENTS
            results.append(
                {
                    "scenario": SCENARIO,
                    "metric": f"bulk load ({events:,} events)",
                    "value": round(timings["load"], 1),
                    "unit": "s",
                }
            )
            status, totals = http_json(stack.base_url, "GET", "/v1/usage:summary", key)
            if status != 200 or int(totals["totals"]["turns"]) != events:
                raise RuntimeError(f"the tenant's ledger is not what was loaded: HTTP {status} {totals}")
            year = ((now - timedelta(days=365)).date().isoformat(), now.date().isoformat())
            for label, day_range in (
                ("usage page, last 30 days", None),
                (f"usage page, whole year ({events:,} events)", year),
            ):
                samples = await asyncio.to_thread(_browser_samples, stack.base_url, key, runs, day_range)
                results += _rows(f"{label}: totals, charts, events", [s["summary"] for s in samples])
                results += _rows(f"{label}: with provider performance", [s["complete"] for s in samples])
        finally:
            await stack.stop()
    return results


if __name__ == "__main__":
    usage_summary.print_table(asyncio.run(run()))
