"""Builds and starts the conversation gRPC server with its background work: the
billing outbox relay and the price refresh. It serves the ConversationService and the
OpenAI-compatible API (vocalbridge.openai.v1.OpenAIService), whose completions are turns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc
from vocalbridge.openai.v1 import openai_service_pb2, openai_service_pb2_grpc
from vocalbridge_common.background import BackgroundTasks
from vocalbridge_common.clients import insecure_channel
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.clients import AuthLimits, LedgerSpent
from vocalbridge_common.limits.config import build_limiter, open_store
from vocalbridge_common.outbox import OutboxRelay
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.retention import RetentionSweeper
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine
from vocalbridge_conversation import openai_presenters, presenters
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.config import SERVICE, ConversationSettings
from vocalbridge_conversation.delivery import BreakerRegistry, DeliveryEngine
from vocalbridge_conversation.models import IdempotencyRow, OutboxRow
from vocalbridge_conversation.openai_servicer import OpenAIServicer
from vocalbridge_conversation.price_book import BillingPrices, PriceBook, PriceRefresher
from vocalbridge_conversation.providers import build_registry
from vocalbridge_conversation.repository import turn_store
from vocalbridge_conversation.service.completions import CompletionService
from vocalbridge_conversation.service.limits import TurnLimits
from vocalbridge_conversation.service.sessions import SessionService
from vocalbridge_conversation.service.turns import TurnService
from vocalbridge_conversation.servicer import ConversationServicer

SCHEMA = SERVICE
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def create_server(settings: ConversationSettings, *, run_relay: bool = True) -> RunningServer:
    """The server on `settings.common.port` (0: any free port), serving once this returns.
    The price refresh always runs; the outbox relay unless `run_relay` is False (tests
    that inspect the outbox). Stopping the server stops both."""
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    signer = IdentitySigner(settings.common.identity_secret)
    http_client = httpx.AsyncClient()
    agents_channel = insecure_channel(settings.agents_address)
    billing_channel = insecure_channel(settings.billing_address)
    agents = AgentDirectory(agents_channel, recent_seconds=settings.turn.agent_cache_seconds)
    prices = PriceBook()
    limits, close_limits = await _turn_limits(settings, signer, billing_channel, prices)
    engine = DeliveryEngine(
        build_registry(settings.provider_env, http_client),
        settings.retry_policy,
        BreakerRegistry.from_env(settings.provider_env),
    )
    sessions = SessionService(db, agents, Paginator(PageTokenCodec(settings.common.identity_secret)))
    turns = TurnService(
        turn_store(db),
        agents,
        engine,
        prices,
        settings.turn,
        encode_response=presenters.send_response_bytes,
        encode_usage_event=presenters.usage_event_bytes,
        limits=limits,
    )
    completions = CompletionService(turns, agents, openai_presenters.completion_bytes)
    background = BackgroundTasks()

    async def close_clients() -> None:
        await agents_channel.close()
        await billing_channel.close()
        await close_limits()
        await http_client.aclose()
        await db.dispose()

    def register(server: grpc.aio.Server) -> None:
        conversation_service_pb2_grpc.add_ConversationServiceServicer_to_server(
            ConversationServicer(sessions, turns), server
        )
        openai_service_pb2_grpc.add_OpenAIServiceServicer_to_server(OpenAIServicer(completions), server)

    running = await start_grpc_server(
        service_names=(
            conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name,
            openai_service_pb2.DESCRIPTOR.services_by_name["OpenAIService"].full_name,
        ),
        register=register,
        signer=signer,
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(background.stop, close_clients),
    )
    refresher = PriceRefresher(prices, BillingPrices(billing_channel, signer), settings.prices.refresh_seconds)
    background.start(refresher.run_forever(), "price-refresh")
    if run_relay:
        relay = OutboxRelay(
            db, OutboxRow, billing_channel, signer, settings.relay, service=SERVICE, health=running.health
        )
        await relay.announce()
        background.start(relay.run_forever(), "outbox-relay")
        # One process sweeps, the one that relays (see vocalbridge_common.retention).
        sweeper = RetentionSweeper(db, settings.retention, idempotency=IdempotencyRow, outbox=OutboxRow)
        background.start(sweeper.run_forever(), "retention-sweep")
    return running


async def _turn_limits(
    settings: ConversationSettings, signer: IdentitySigner, billing: grpc.aio.Channel, prices: PriceBook
) -> tuple[TurnLimits | None, Callable[[], Awaitable[None]]]:
    """The limits turns are held to (None without an auth address), and how to close what they use."""
    if settings.auth_address is None:

        async def nothing() -> None:
            return None

        return None, nothing
    auth_channel = insecure_channel(settings.auth_address)
    store = await open_store(settings.limits, SERVICE)
    limiter = build_limiter(store, settings.limits, LedgerSpent(billing))
    cache = TenantLimitsCache(
        AuthLimits(auth_channel, signer, SERVICE).fetch, settings.limits.cache_ttl_seconds, unlimited_when_unknown=True
    )

    async def close() -> None:
        await auth_channel.close()
        await store.close()

    return TurnLimits(cache, limiter, prices, settings.limits), close
