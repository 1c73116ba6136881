"""Prices as the conversation service knows them: billing's price rows, so the cost
returned to a caller is computed with the same rows (and the same pricing function)
billing records.

A turn reads the rows it has (`PriceBook.rows()`, no I/O) and never waits on billing.
A background task started with the server (`PriceRefresher`) fetches billing's
ListPrices with the service's own identity, at start-up and then periodically. Until
billing has answered once, the seed rows (which billing also starts with) stand in;
an outage keeps the last rows billing gave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import grpc

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from vocalbridge_common import scopes
from vocalbridge_common.clients import service_metadata
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.price_protos import price_from_proto
from vocalbridge_common.pricing import SEED_PRICES, PriceRow
from vocalbridge_conversation.config import SERVICE

log = logging.getLogger(__name__)

LIST_PRICES_PAGE_SIZE = 1000
LIST_PRICES_TIMEOUT_SECONDS = 2.0


class PriceBook:
    """The price rows turns are priced with."""

    def __init__(self, rows: Iterable[PriceRow] = SEED_PRICES) -> None:
        self._rows = tuple(rows)

    def rows(self) -> tuple[PriceRow, ...]:
        return self._rows

    def replace(self, rows: Iterable[PriceRow]) -> None:
        self._rows = tuple(rows)


class PriceSource(Protocol):
    async def fetch(self) -> list[PriceRow]:
        """Every price row; raises grpc.aio.AioRpcError when the source cannot answer."""


class BillingPrices:
    """Billing's price list, read with ListPrices as the conversation service itself
    (no tenant: the internal scope, and read to list)."""

    def __init__(self, channel: grpc.aio.Channel, signer: IdentitySigner) -> None:
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)
        self._signer = signer

    async def fetch(self) -> list[PriceRow]:
        # Minted per refresh: an identity lives minutes, the refresher runs for the process's life.
        metadata = service_metadata(self._signer, SERVICE, (scopes.READ,))
        rows: list[PriceRow] = []
        token = ""
        while True:
            page = await self._stub.ListPrices(
                billing_service_pb2.ListPricesRequest(page_size=LIST_PRICES_PAGE_SIZE, page_token=token),
                metadata=metadata,
                timeout=LIST_PRICES_TIMEOUT_SECONDS,
            )
            rows.extend(price_from_proto(price) for price in page.prices)
            token = page.next_page_token
            if not token:
                return rows


class PriceRefresher:
    """Keeps a PriceBook current: every `refresh_seconds` after a success, twice as
    often while billing does not answer."""

    def __init__(
        self,
        book: PriceBook,
        source: PriceSource,
        refresh_seconds: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._book = book
        self._source = source
        self._refresh_seconds = refresh_seconds
        self._sleep = sleep

    async def refresh_once(self) -> bool:
        """Whether billing answered. An empty list keeps the rows the book has."""
        try:
            rows = await self._source.fetch()
        except grpc.aio.AioRpcError as error:
            log.warning("could not refresh prices from billing: %s", error.code().name)
            return False
        if rows:
            self._book.replace(rows)
        return True

    async def run_forever(self) -> None:
        while True:
            try:
                answered = await self.refresh_once()
            except Exception:
                log.exception("price refresh failed")
                answered = False
            await self._sleep(self._refresh_seconds if answered else self._refresh_seconds / 2)
