"""Builds and starts the conversation gRPC server and its outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from grpc_health.v1 import health_pb2

from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc
from vocalbridge_common.clients import insecure_channel
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.pagination import PageTokenCodec
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.config import ConversationSettings
from vocalbridge_conversation.delivery import BreakerRegistry, DeliveryEngine
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers import build_registry
from vocalbridge_conversation.relay import HEALTH_NAME, OutboxRelay
from vocalbridge_conversation.service import ConversationService
from vocalbridge_conversation.servicer import ConversationServicer

SCHEMA = "conversation"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def create_server(settings: ConversationSettings, *, run_relay: bool = True) -> RunningServer:
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    signer = IdentitySigner(settings.common.identity_secret)
    http_client = httpx.AsyncClient()
    agents_channel = insecure_channel(settings.agents_address)
    billing_channel = insecure_channel(settings.billing_address)
    engine = DeliveryEngine(
        build_registry(settings.provider_env, http_client),
        settings.retry_policy,
        BreakerRegistry.from_env(settings.provider_env),
    )
    service = ConversationService(
        db,
        AgentDirectory(agents_channel),
        engine,
        PriceBook(billing_channel),
        PageTokenCodec(settings.common.identity_secret),
        settings.turn,
    )
    relay_task: asyncio.Task | None = None

    async def stop_relay() -> None:
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task

    async def close_clients() -> None:
        await agents_channel.close()
        await billing_channel.close()
        await http_client.aclose()
        await db.dispose()

    def register(server) -> None:
        conversation_service_pb2_grpc.add_ConversationServiceServicer_to_server(ConversationServicer(service), server)

    running = await start_grpc_server(
        service_names=(conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name,),
        register=register,
        signer=signer,
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(stop_relay, close_clients),
    )
    if run_relay:
        relay = OutboxRelay(db, billing_channel, signer, settings.relay, health=running.health)
        await running.health.set(HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING)
        relay_task = asyncio.create_task(relay.run_forever(), name="outbox-relay")
    return running
