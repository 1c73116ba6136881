"""Builds and starts the voice gRPC server: the speech workers (each role's engines and
voices loaded, or the start fails naming what is missing), the clients of the conversation,
agents and billing services, and the billing outbox relay of standalone speech usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from vocalbridge.voice.v1 import voice_service_pb2, voice_service_pb2_grpc
from vocalbridge_common.background import BackgroundTasks
from vocalbridge_common.clients import insecure_channel
from vocalbridge_common.config import ConfigError
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.clients import AuthLimits, LedgerSpent
from vocalbridge_common.limits.config import build_limiter, open_store
from vocalbridge_common.outbox import OutboxRelay
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.pricing import SEED_PRICES
from vocalbridge_common.retention import RetentionSweeper
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine
from vocalbridge_voice import presenters
from vocalbridge_voice.agents_client import AgentVoices
from vocalbridge_voice.config import SERVICE, VoiceSettings
from vocalbridge_voice.conversation_client import ConversationTurns
from vocalbridge_voice.engines.pool import EnginePool
from vocalbridge_voice.models import IdempotencyRow, UsageOutboxRow
from vocalbridge_voice.service.budget import SpeechBudget
from vocalbridge_voice.service.converse import ConverseService
from vocalbridge_voice.service.speech import Capacity, Speech
from vocalbridge_voice.service.standalone import Encoders, StandaloneService
from vocalbridge_voice.service.streaming import StreamingService
from vocalbridge_voice.service.voices import VoiceListService
from vocalbridge_voice.servicer import VoiceServicer

SCHEMA = SERVICE
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def create_server(settings: VoiceSettings, *, run_relay: bool = True) -> RunningServer:
    pool = EnginePool(settings.engines, settings.workers)
    await pool.start()  # ConfigError naming the engine, model or voice that is missing
    speech = Speech(pool, settings.stt_engine, settings.default_voice)
    problem = speech.check_default_voice()
    if problem is not None:
        await pool.stop()
        raise ConfigError(f"VB_VOICE_DEFAULT_VOICE: {problem}")
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    signer = IdentitySigner(settings.common.identity_secret)
    conversation_channel = insecure_channel(settings.conversation_address)
    agents_channel = insecure_channel(settings.agents_address)
    billing_channel = insecure_channel(settings.billing_address)
    turns = ConversationTurns(conversation_channel, signer)
    requests = Capacity("requests", settings.max_requests)
    converse = ConverseService(turns, AgentVoices(agents_channel), speech, requests, settings.audio)
    budget, close_budget = await _speech_budget(settings, signer, billing_channel, speech.speech_provider)
    standalone = StandaloneService(
        db,
        speech,
        requests,
        settings.audio,
        Encoders(presenters.transcription_bytes, presenters.synthesis_bytes, presenters.usage_event_bytes),
        budget=budget,
        keys=settings.keys,
    )
    streaming = StreamingService(
        converse,
        turns,
        speech,
        Capacity("streams", settings.max_streams),
        reply_lead=settings.reply_lead_seconds,
        pacing_limit=settings.reply_pacing_limit_seconds,
    )
    background = BackgroundTasks()

    async def close() -> None:
        for channel in (conversation_channel, agents_channel, billing_channel):
            await channel.close()
        await close_budget()
        await db.dispose()
        await pool.stop()

    paginator = Paginator(PageTokenCodec(settings.common.identity_secret))

    def register(server: grpc.aio.Server) -> None:
        voice_service_pb2_grpc.add_VoiceServiceServicer_to_server(
            VoiceServicer(converse, standalone, streaming, VoiceListService(speech, paginator)), server
        )

    running = await start_grpc_server(
        service_names=(voice_service_pb2.DESCRIPTOR.services_by_name["VoiceService"].full_name,),
        register=register,
        signer=signer,
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(background.stop, close),
    )
    if run_relay:
        relay = OutboxRelay(
            db, UsageOutboxRow, billing_channel, signer, settings.relay, service=SERVICE, health=running.health
        )
        await relay.announce()
        background.start(relay.run_forever(), "outbox-relay")
        # One process sweeps, the one that relays (see vocalbridge_common.retention).
        sweeper = RetentionSweeper(db, settings.retention, idempotency=IdempotencyRow, outbox=UsageOutboxRow)
        background.start(sweeper.run_forever(), "retention-sweep")
    return running


async def _speech_budget(
    settings: VoiceSettings, signer: IdentitySigner, billing: grpc.aio.Channel, speech_provider: str
) -> tuple[SpeechBudget, Callable[[], Awaitable[None]]]:
    """The budgets Transcribe and Synthesize spend (none without an auth address), and how to
    close what they use."""
    if settings.auth_address is None:

        async def nothing() -> None:
            return None

        return SpeechBudget.unlimited(), nothing
    auth_channel = insecure_channel(settings.auth_address)
    store = await open_store(settings.limits, "voice")
    cache = TenantLimitsCache(
        AuthLimits(auth_channel, signer, "voice").fetch, settings.limits.cache_ttl_seconds, unlimited_when_unknown=True
    )
    limiter = build_limiter(store, settings.limits, LedgerSpent(billing))

    async def close() -> None:
        await auth_channel.close()
        await store.close()

    return SpeechBudget(cache, limiter, speech_provider, SEED_PRICES), close
