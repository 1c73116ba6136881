"""A service's background loops (the billing outbox relay, the price refresh): started once
the server serves, cancelled and awaited when it stops (an `on_stop` hook of
`server.start_grpc_server`).

A loop runs until it is cancelled. One that ends any other way has stopped its work (a relay
that no longer delivers leaves usage unbilled): that is logged as an ERROR the moment it
happens, not when the server stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_report_end)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Cancels every loop and waits until each has finished (a loop that ended with an error
        was reported then; it does not fail the shutdown)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def _report_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    log.error(
        "background loop %s ended%s; its work has stopped until the process restarts",
        task.get_name(),
        " with an error" if error is not None else "",
        exc_info=error,
    )
