"""The entry point every service's `__main__` delegates to:

python -m vocalbridge_<svc> migrate   upgrade the service's database, then exit
python -m vocalbridge_<svc> serve     (default) serve until SIGTERM / SIGINT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import uvloop

from vocalbridge_common.config import CommonSettings, ConfigError
from vocalbridge_common.logging import configure_logging
from vocalbridge_common.metrics import serve_metrics
from vocalbridge_common.migrations import migrate
from vocalbridge_common.server import RunningServer, serve_until_signalled
from vocalbridge_common.telemetry import setup_tracing


class ServiceSettings(Protocol):
    """A service's frozen settings: its own values and the common ones."""

    @property
    def common(self) -> CommonSettings: ...


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def service_main(
    *,
    settings_from_env: Callable[[], SettingsT],
    create_server: Callable[[SettingsT], Awaitable[RunningServer]],
    schema: str,
    migrations_dir: Path,
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"vocalbridge_{schema}")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "migrate"))
    args = parser.parse_args(argv)
    try:
        settings = settings_from_env()
    except ConfigError as exc:
        print(f"vocalbridge-{schema}: configuration error: {exc}", file=sys.stderr)  # noqa: T201 - before logging exists
        return 2
    common = settings.common
    configure_logging(schema, common.log_level)
    log = logging.getLogger(f"vocalbridge.{schema}")
    if args.command == "migrate":
        migrate(common.database_url, schema, migrations_dir)
        log.info("migrated", extra={"schema": schema})
        return 0
    setup_tracing(schema)

    async def serve() -> None:
        running = await create_server(settings)
        exporter = await serve_metrics(common.listen_host, common.metrics_port) if common.metrics_port else None
        try:
            await serve_until_signalled(running, common.shutdown_grace_seconds)
        finally:
            if exporter is not None:
                await exporter.close()

    # uvloop: the same asyncio API on libuv, with a cheaper loop iteration per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
    return 0
