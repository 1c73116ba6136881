"""Prices as the conversation service knows them: billing's price rows, fetched
with ListPrices and refreshed periodically, so the cost returned to a caller is
computed with the same rows (and the same pricing function) billing records.
Until billing has answered once, the seed rows (which billing also starts with)
stand in; a billing outage never fails a turn."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from vocalbridge_common.clients import forwarded_metadata
from vocalbridge_common.price_protos import price_from_proto
from vocalbridge_common.pricing import SEED_PRICES, PriceRow

log = logging.getLogger(__name__)


class PriceBook:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        refresh_seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._rows: tuple[PriceRow, ...] = SEED_PRICES
        self._fetched_at: float | None = None

    async def rows(self) -> tuple[PriceRow, ...]:
        now = self._monotonic()
        if self._fetched_at is None or now - self._fetched_at >= self._refresh_seconds:
            await self._refresh(now)
        return self._rows

    async def _refresh(self, now: float) -> None:
        rows: list[PriceRow] = []
        token = ""
        try:
            while True:
                page = await self._stub.ListPrices(
                    billing_service_pb2.ListPricesRequest(page_size=1000, page_token=token),
                    metadata=forwarded_metadata(),
                    timeout=2.0,
                )
                rows.extend(price_from_proto(p) for p in page.prices)
                token = page.next_page_token
                if not token:
                    break
        except grpc.aio.AioRpcError as error:
            # Keep what we had; retry on a later turn, not on every one.
            log.warning("could not refresh prices from billing: %s", error.code().name)
            self._fetched_at = now - self._refresh_seconds / 2
            return
        if rows:
            self._rows = tuple(rows)
        self._fetched_at = now
