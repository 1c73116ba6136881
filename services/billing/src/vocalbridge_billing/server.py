"""Builds and starts the billing gRPC server (production and tests alike)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc

from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from vocalbridge_billing.config import SERVICE, BillingSettings
from vocalbridge_billing.service.analytics import AnalyticsService
from vocalbridge_billing.service.ledger import LedgerService
from vocalbridge_billing.service.prices import PriceService
from vocalbridge_billing.servicer import BillingServicer
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine

SCHEMA = SERVICE  # the service name is also its database schema
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def create_server(settings: BillingSettings) -> RunningServer:
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    paginator = Paginator(PageTokenCodec(settings.common.identity_secret))
    servicer = BillingServicer(
        ledger=LedgerService(db, max_clock_skew=timedelta(seconds=settings.max_clock_skew_seconds)),
        analytics=AnalyticsService(db, paginator),
        prices=PriceService(db, paginator),
    )

    def register(server: grpc.aio.Server) -> None:
        billing_service_pb2_grpc.add_BillingServiceServicer_to_server(servicer, server)

    return await start_grpc_server(
        service_names=(billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name,),
        register=register,
        signer=IdentitySigner(settings.common.identity_secret),
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(db.dispose,),
    )
