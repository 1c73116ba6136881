"""A tenant's limits, remembered for a short TTL in each process (like the key cache):
the hot paths read them from memory, and a change made through the API takes effect
everywhere within the TTL."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vocalbridge_common.limits.model import TenantLimits

log = logging.getLogger(__name__)

_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class _Entry:
    limits: TenantLimits
    fetched_at: float


class TenantLimitsCache:
    def __init__(
        self,
        fetch: Callable[[str], Awaitable[TenantLimits]],
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        unlimited_when_unknown: bool = False,
    ) -> None:
        self._unlimited_when_unknown = unlimited_when_unknown
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}

    async def get(self, tenant_id: str) -> TenantLimits:
        """The tenant's limits; when they cannot be fetched, the last ones known (logged),
        and when none are known the error propagates, or with `unlimited_when_unknown` no
        limits until the TTL passes (logged)."""
        now = self._monotonic()
        entry = self._entries.get(tenant_id)
        if entry is not None and now - entry.fetched_at < self._ttl:
            return entry.limits
        try:
            limits = await self._fetch(tenant_id)
        except Exception as error:
            if entry is None and self._unlimited_when_unknown:
                log.warning("could not read the limits of a tenant (%s); none apply for %.0f s", error, self._ttl)
                entry = _Entry(TenantLimits(tenant_id), now)
                self._entries[tenant_id] = entry
                return entry.limits
            if entry is None:
                raise
            log.warning("could not refresh the limits of a tenant; using the last known", exc_info=True)
            self._entries[tenant_id] = _Entry(entry.limits, now)
            return entry.limits
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[tenant_id] = _Entry(limits, now)
        return limits

    def forget(self, tenant_id: str) -> None:
        """Drops a tenant's entry (after this process changed its limits)."""
        self._entries.pop(tenant_id, None)
