"""Summary lines of the suites that prove properties in bulk (isolation matrix, hostile input,
secrets): collected while they run and printed at the end of the pytest run, so `make test`
shows the counts (requests, refusals, 5xx, writes, cross-tenant reads) and not only a pass."""

from __future__ import annotations

LINES: list[str] = []


def report(line: str) -> None:
    LINES.append(line)
    # Also on the real stdout, for a run with -s or one interrupted before the end.
    print(line, flush=True)
