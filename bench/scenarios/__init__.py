"""Benchmark scenarios. Each module exposes `async def run() -> list[dict]` returning rows
{scenario, metric, value, unit}; `run(quick=True)` is passed when the module accepts it."""
