"""Builds and starts the agents gRPC server (production and tests alike), with the voice
service client that lists the installed voices when VB_VOICE_ADDRESS is set."""

from __future__ import annotations

from pathlib import Path

import grpc

from vocalbridge.agents.v1 import agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_agents.config import AgentsSettings
from vocalbridge_agents.service import AgentService
from vocalbridge_agents.servicer import AgentServicer
from vocalbridge_agents.voices_client import InstalledVoices
from vocalbridge_common.clients import insecure_channel
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine

SCHEMA = "agents"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


async def create_server(settings: AgentsSettings) -> RunningServer:
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    signer = IdentitySigner(settings.common.identity_secret)
    voice_channel = insecure_channel(settings.voice_address) if settings.voice_address else None
    voices = InstalledVoices.from_channel(voice_channel, signer) if voice_channel else InstalledVoices(None)
    service = AgentService(
        db,
        Paginator(PageTokenCodec(settings.common.identity_secret)),
        known_providers=settings.common.known_providers,
        max_system_prompt_chars=settings.max_system_prompt_chars,
        voices=voices,
    )

    async def close() -> None:
        if voice_channel is not None:
            await voice_channel.close()
        await db.dispose()

    def register(server: grpc.aio.Server) -> None:
        agents_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(service), server)

    return await start_grpc_server(
        service_names=(agents_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,),
        register=register,
        signer=signer,
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(close,),
    )
