"""Builds and starts the agents gRPC server (production and tests alike)."""

from __future__ import annotations

from pathlib import Path

import grpc

from vocalbridge.agents.v1 import agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_agents.config import AgentsSettings
from vocalbridge_agents.service import AgentService
from vocalbridge_agents.servicer import AgentServicer
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
    service = AgentService(
        db,
        Paginator(PageTokenCodec(settings.common.identity_secret)),
        known_providers=settings.common.known_providers,
        max_system_prompt_chars=settings.max_system_prompt_chars,
    )

    def register(server: grpc.aio.Server) -> None:
        agents_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(service), server)

    return await start_grpc_server(
        service_names=(agents_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,),
        register=register,
        signer=IdentitySigner(settings.common.identity_secret),
        host=settings.common.listen_host,
        port=settings.common.port,
        on_stop=(db.dispose,),
    )
