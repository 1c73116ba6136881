"""A stand-in for the billing service, on a real socket: it serves a price list and
records every usage event and every caller identity it receives, and can hang instead
of answering (a billing that accepts connections but does not respond)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from tests.conftest import TEST_IDENTITY_SECRET
from vocalbridge.billing.v1 import billing_service_pb2 as pb
from vocalbridge.billing.v1 import billing_service_pb2_grpc, usage_event_pb2
from vocalbridge_common.headers import IDENTITY_HEADER
from vocalbridge_common.identity import Identity, IdentitySigner
from vocalbridge_common.price_protos import price_to_proto
from vocalbridge_common.pricing import SEED_PRICES, PriceRow


def free_port() -> int:
    """A port nothing listens on (yet): billing "down" until a test starts it there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeBilling(billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(self, prices: Iterable[PriceRow] = SEED_PRICES) -> None:
        self.prices = list(prices)
        self.events: list[usage_event_pb2.UsageEvent] = []
        # (method, identity) of every call, verified as the services verify it.
        self.callers: list[tuple[str, Identity]] = []
        self.answering = asyncio.Event()
        self.answering.set()

    def _caller(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        token = dict(context.invocation_metadata() or ()).get(IDENTITY_HEADER)
        self.callers.append((method, IdentitySigner(TEST_IDENTITY_SECRET).verify(str(token))))

    async def ListPrices(self, request: pb.ListPricesRequest, context: Any) -> pb.ListPricesResponse:
        self._caller("ListPrices", context)
        await self.answering.wait()
        return pb.ListPricesResponse(prices=[price_to_proto(row) for row in self.prices])

    async def RecordUsage(self, request: pb.RecordUsageRequest, context: Any) -> pb.RecordUsageResponse:
        self._caller("RecordUsage", context)
        await self.answering.wait()
        self.events.extend(request.events)
        return pb.RecordUsageResponse(accepted_count=len(request.events))

    def identities(self, method: str) -> list[Identity]:
        return [identity for called, identity in self.callers if called == method]


@contextlib.asynccontextmanager
async def billing_on(port: int, fake: FakeBilling) -> AsyncIterator[FakeBilling]:
    server = grpc.aio.server()
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(fake, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        yield fake
    finally:
        fake.answering.set()
        await server.stop(0)
