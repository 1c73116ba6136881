"""A service's background loops: one that ends without being cancelled is reported at once."""

from __future__ import annotations

import asyncio
import logging

from vocalbridge_common.background import BackgroundTasks


async def test_a_loop_that_dies_is_reported_when_it_dies_and_does_not_fail_the_shutdown(caplog):
    async def dies() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def runs() -> None:
        await asyncio.Event().wait()

    tasks = BackgroundTasks()
    with caplog.at_level(logging.ERROR, logger="vocalbridge_common.background"):
        tasks.start(dies(), "outbox-relay")
        tasks.start(runs(), "price-refresh")
        for _ in range(3):
            await asyncio.sleep(0)
        reported = [record for record in caplog.records if "ended" in record.getMessage()]
        assert [record.getMessage() for record in reported] == [
            "background loop outbox-relay ended with an error; its work has stopped until the process restarts"
        ]
        assert isinstance(reported[0].exc_info[1], ConnectionRefusedError)
        await tasks.stop()
    # Cancelling the live loop at shutdown is no error.
    assert not [record for record in caplog.records if "price-refresh" in record.getMessage()]
