"""Keys' last-use times, recorded off the request path: Check notes a key at most once a
minute per process (a dictionary lookup), and a background task writes what was noted
every few seconds in one transaction. A key's time is therefore to the minute and a few
seconds late; with several workers or replicas each writes it at most once a minute, and
a write never moves it back."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from vocalbridge_common.db import utcnow

log = logging.getLogger(__name__)

_MAX_KEYS = 100_000


class LastUseRecorder:
    def __init__(
        self,
        write: Callable[[Mapping[str, datetime]], Awaitable[None]],
        *,
        every_seconds: float = 60.0,
        flush_seconds: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._every = every_seconds
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._noted: dict[str, float] = {}
        self._pending: dict[str, datetime] = {}

    def used(self, key_id: str) -> None:
        """On the request path: notes the key's use unless it was noted within the minute."""
        now = self._monotonic()
        if now - self._noted.get(key_id, -math.inf) < self._every:
            return
        if len(self._noted) >= _MAX_KEYS:
            self._noted.clear()
        self._noted[key_id] = now
        self._pending[key_id] = self._clock()

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await self._write(pending)
        except Exception:
            log.warning("could not record the last use of %d keys", len(pending), exc_info=True)
            for key_id, when in pending.items():
                self._pending.setdefault(key_id, when)

    async def run_forever(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._flush_seconds)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())
