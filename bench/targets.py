"""The performance targets (issue 8) judged from a run's rows: met, not met, or not measured
in this run (a scenario left out with --only, or memory growth, which `make soak` measures).

Numbers, not a test: `make bench` still exits 0 when a target is missed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SCENARIO = "targets"


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    limit: float
    at_most: bool  # True: the value must be <= limit; False: >= limit
    measure: Callable[[list[dict]], float | None]

    def judge(self, rows: list[dict]) -> dict:
        value = self.measure(rows)
        if value is None:
            verdict = "not measured"
        else:
            met = value <= self.limit if self.at_most else value >= self.limit
            verdict = "met" if met else "NOT MET"
        goal = f"{'≤' if self.at_most else '≥'} {self.limit:g} {self.unit}"
        return {
            "scenario": SCENARIO,
            "metric": self.name,
            "value": None if value is None else round(value, 2),
            "unit": self.unit,
            "labels": {"goal": goal, "verdict": verdict},
        }


def _cells(rows: list[dict], target: str) -> dict[int, dict[str, object]]:
    """send_message's numbers of one target (full, half, baseline) by connections."""
    cells: dict[int, dict[str, object]] = {}
    for row in rows:
        labels = row.get("labels") or {}
        if row.get("scenario") == "send_message" and labels.get("target") == target and "connections" in labels:
            cells.setdefault(labels["connections"], {})[labels["stat"]] = row["value"]
    return cells


def _best_level(rows: list[dict]) -> dict[str, object] | None:
    """The full stack's level with the most 2xx/s among those without errors."""
    clean = [cell for cell in _cells(rows, "full").values() if cell.get("errors") == 0]
    return max(clean, key=lambda cell: float(cell.get("throughput") or 0), default=None)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def best_throughput(rows: list[dict]) -> float | None:
    best = _best_level(rows)
    return _number(best.get("throughput")) if best else None


def cpu_at_best(rows: list[dict]) -> float | None:
    best = _best_level(rows)
    return _number(best.get("cpu_per_1k_with_pg")) if best else None


def sequential(stat: str) -> Callable[[list[dict]], float | None]:
    def measure(rows: list[dict]) -> float | None:
        return _number(_cells(rows, "full").get(1, {}).get(stat))

    return measure


def half_load_p99(rows: list[dict]) -> float | None:
    cells = list(_cells(rows, "half").values())
    return _number(cells[0].get("p99")) if cells else None


def errors(rows: list[dict]) -> float | None:
    cells = [*_cells(rows, "full").values(), *_cells(rows, "half").values()]
    return float(sum(int(cell.get("errors") or 0) for cell in cells)) if cells else None


def memory(stat: str) -> Callable[[list[dict]], float | None]:
    def measure(rows: list[dict]) -> float | None:
        return next(
            (
                _number(row["value"])
                for row in rows
                if (row.get("labels") or {}).get("target") == "memory" and row["labels"].get("stat") == stat
            ),
            None,
        )

    return measure


def exactly_once(rows: list[dict]) -> float | None:
    row = next((r for r in rows if (r.get("labels") or {}).get("stat") == "exactly_once"), None)
    return None if row is None else (1.0 if row["value"] == "yes" else 0.0)


def slowest_p50(prefix: str) -> Callable[[list[dict]], float | None]:
    """The largest p50 among usage_summary's metrics starting with `prefix`."""

    def measure(rows: list[dict]) -> float | None:
        values = [
            float(row["value"])
            for row in rows
            if row.get("scenario") == "usage_summary"
            and row["metric"].startswith(prefix)
            and row["metric"].endswith(" p50")
        ]
        return max(values) if values else None

    return measure


def completions(stat: str, connections: int | None = None) -> Callable[[list[dict]], float | None]:
    """chat_completions' `stat`: at `connections`, or the best among its error-free levels."""

    def measure(rows: list[dict]) -> float | None:
        cells: dict[int, dict[str, object]] = {}
        for row in rows:
            labels = row.get("labels") or {}
            if row.get("scenario") == "chat_completions" and "connections" in labels:
                cells.setdefault(labels["connections"], {})[labels["stat"]] = row["value"]
        if connections is not None:
            return _number(cells.get(connections, {}).get(stat))
        values = [_number(cell.get(stat)) for cell in cells.values() if cell.get("errors") == 0]
        return max((v for v in values if v is not None), default=None)

    return measure


def completions_exactly_once(rows: list[dict]) -> float | None:
    row = next((r for r in rows if (r.get("labels") or {}).get("stat") == "completions_exactly_once"), None)
    return None if row is None else (1.0 if row["value"] == "yes" else 0.0)


def memory_growth(rows: list[dict]) -> float | None:
    return next(
        (_number(row["value"]) for row in rows if row.get("scenario") == "soak" and row["metric"] == "memory growth"),
        None,
    )


TARGETS = (
    Target("throughput at the best concurrency (no errors there)", "turns/s", 600, False, best_throughput),
    Target("throughput, stretch", "turns/s", 800, False, best_throughput),
    Target("errors, every full-stack run", "count", 0, True, errors),
    Target("one sequential client: p50", "ms", 4, True, sequential("p50")),
    Target("one sequential client: p99", "ms", 10, True, sequential("p99")),
    Target("at half the best throughput: p99", "ms", 30, True, half_load_p99),
    Target("CPU per 1,000 turns at the best level, every process and PostgreSQL", "s", 3, True, cpu_at_best),
    Target("resident memory of the services of a text turn (every worker)", "MB", 600, True, memory("total")),
    Target("resident memory of every service, voice's speech models included", "MB", 600, True, memory("all")),
    Target("memory growth over the soak (make soak)", "%", 5, True, memory_growth),
    Target(
        "GetUsageSummary over the ledger, slowest p50 of the groupings", "ms", 100, True, slowest_p50("GetUsageSummary")
    ),
    Target("GetProviderPerformance p50", "ms", 200, True, slowest_p50("GetProviderPerformance")),
    Target("exactly-once billing under load (1 = ledger turns equal committed turns)", "", 1, False, exactly_once),
    # The OpenAI-compatible endpoint, stateless: the text turn's targets (issue 12).
    Target("chat completions: throughput at the best concurrency", "req/s", 600, False, completions("throughput")),
    Target("chat completions: one sequential client, p50", "ms", 4, True, completions("p50", 1)),
    Target("chat completions: exactly-once billing under load", "", 1, False, completions_exactly_once),
)


def judge(rows: list[dict]) -> list[dict]:
    return [target.judge(rows) for target in TARGETS]


def format_table(rows: list[dict]) -> str:
    width = max(len(row["metric"]) for row in rows)
    lines = [f"{'target':<{width}}  {'value':>10}  {'goal':<16}  verdict", "-" * (width + 44)]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:g}"
        lines.append(f"{row['metric']:<{width}}  {value:>10}  {row['labels']['goal']:<16}  {row['labels']['verdict']}")
    return "\n".join(lines)
