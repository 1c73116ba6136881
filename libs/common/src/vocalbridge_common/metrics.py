"""Prometheus metrics: how a service declares what it counts, and how they are served.

Declare a metric once, at module level next to the code that records it (like a logger: the
one kind of process-wide state the services keep), with the helpers below, which add the
`vocalbridge_` prefix:

    from vocalbridge_common import metrics

    TURNS = metrics.counter("turns", "Turns by outcome and provider.", ("outcome", "provider"))
    ...
    TURNS.labels(outcome="complete", provider="vendorA").inc()   # exposed as vocalbridge_turns_total

On a hot path, bind the label values once (`child = TURNS.labels(...)`) and keep the child:
`labels()` takes a lock and a dictionary lookup on every call, `child.inc()` only adds.
Label values must come from a small, fixed set (providers, outcomes, methods, codes), never
from tenants, ids or free text: every distinct value is a new time series.

Every service serves its metrics over HTTP (`serve_metrics`, started by `runtime.service_main`)
on `VB_<SVC>_METRICS_PORT` (default: `topology.METRICS_PORTS`), path `/metrics`.

Several processes of one service (the stack runner's `VB_<SVC>_WORKERS`, on one gRPC port)
share one metrics port too: with `PROMETHEUS_MULTIPROC_DIR` set (one directory per service)
prometheus-client keeps each process's values in a file there, every worker binds the metrics
port with SO_REUSEPORT, and whichever worker answers a scrape adds up the files of all of them.
Without it (one process per pod on Kubernetes) the values stay in memory. The variable is read
when prometheus-client is first imported, so it must be in the process's environment at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Literal

# The multiprocess directory must exist before the first metric is declared (at import).
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

from prometheus_client import (  # noqa: E402 - after the directory exists
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

log = logging.getLogger(__name__)

PREFIX = "vocalbridge_"

# Request latencies: from a cached auth Check (sub-millisecond) to a streamed voice
# conversation (minutes). Few buckets: an observation walks them until one fits.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """A counter `vocalbridge_<name>_total`; `name` without the prefix and the suffix."""
    return Counter(PREFIX + name, documentation, tuple(labels))


def histogram(
    name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    """A histogram `vocalbridge_<name>` (`_bucket`, `_sum`, `_count`)."""
    return Histogram(PREFIX + name, documentation, tuple(labels), buckets=tuple(buckets))


# How the workers' values of a gauge combine in one scrape (prometheus-client's multiprocess
# modes); the `live` ones forget a process once it has exited.
AcrossProcesses = Literal["livemax", "livemin", "livesum", "liveall", "livemostrecent", "max", "min", "sum", "all"]


def gauge(
    name: str, documentation: str, labels: Sequence[str] = (), *, across_processes: AcrossProcesses = "livemax"
) -> Gauge:
    """A gauge `vocalbridge_<name>`; `across_processes`: see AcrossProcesses."""
    return Gauge(PREFIX + name, documentation, tuple(labels), multiprocess_mode=across_processes)


# --------------------------------------------------------------------------------------------
# What more than one service records.

# Every RPC through the common interceptor (not health checks or reflection), by gRPC method
# and status code; `_count` is the number of requests. Recorded in interceptor.py.
REQUEST_SECONDS = histogram(
    "grpc_server_handling_seconds",
    "Time to handle a gRPC call (a whole stream for streaming calls), by method and status code. "
    "The _count series counts the calls.",
    ("grpc_service", "grpc_method", "grpc_code"),
)

# The tenant controls count their refusals (RATE_LIMITED, BUDGET_EXCEEDED) by reason and level
# in vocalbridge_common.limits.limiter (vocalbridge_limit_refusals_total).


# --------------------------------------------------------------------------------------------
# Exposition


def multiprocess_dir() -> str | None:
    """The directory the workers of this service share their values in, if any."""
    return _MULTIPROC_DIR or None


def exposition_registry() -> CollectorRegistry:
    """What a scrape reports: every worker's values (multiprocess mode), else this process's."""
    if not _MULTIPROC_DIR:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=_MULTIPROC_DIR)  # type: ignore[no-untyped-call]
    return registry


class MetricsServer:
    """`GET /metrics` over HTTP/1.1 on the service's event loop (no thread of its own)."""

    def __init__(self, server: asyncio.Server, registry: CollectorRegistry) -> None:
        self._server = server
        self._registry = registry

    @property
    def port(self) -> int:
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()


async def serve_metrics(host: str, port: int) -> MetricsServer:
    """Starts serving `/metrics` on host:port (port 0: any free port). Workers of one service
    bind the same port (SO_REUSEPORT), and each answers with all of their values."""
    registry = exposition_registry()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            if method in ("GET", "HEAD") and path.split("?", 1)[0] == "/metrics":
                # Reading every worker's file takes a moment: off the event loop.
                body = await asyncio.to_thread(generate_latest, registry)
                status, content_type = "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, content_type = b"not found: try /metrics\n", "404 Not Found", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (OSError, TimeoutError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_port=True)
    log.info("serving metrics", extra={"metrics_port": server.sockets[0].getsockname()[1]})
    return MetricsServer(server, registry)
