"""Builds and starts the auth gRPC server (production and tests alike)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from vocalbridge.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from vocalbridge_auth.check import AuthorizationServicer, KeyAuthenticator
from vocalbridge_auth.config import AuthSettings
from vocalbridge_auth.last_use import LastUseRecorder
from vocalbridge_auth.routes import contract_routes
from vocalbridge_auth.service import AuthService
from vocalbridge_auth.service.limits import LimitService
from vocalbridge_auth.servicer import AuthServicer
from vocalbridge_common.clients import insecure_channel
from vocalbridge_common.db import Database
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.limits.clients import LedgerSpent
from vocalbridge_common.limits.config import build_limiter, open_store
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.server import RunningServer, start_grpc_server
from vocalbridge_common.telemetry import instrument_engine

SCHEMA = "auth"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"


async def create_server(settings: AuthSettings) -> RunningServer:
    db = Database(settings.common.database_url, SCHEMA, pool_size=settings.common.database_pool_size)
    instrument_engine(db.engine)
    signer = IdentitySigner(settings.common.identity_secret, settings.identity_ttl_seconds)
    paginator = Paginator(PageTokenCodec(settings.common.identity_secret))
    billing_channel = insecure_channel(settings.billing_address)
    store = await open_store(settings.limits, "auth")
    limiter = build_limiter(store, settings.limits, LedgerSpent(billing_channel))
    limits = LimitService(db, paginator, limiter, settings.limits.defaults, settings.limits.cache_ttl_seconds)

    def forget_key(prefix: str) -> None:
        authenticator.forget(prefix)

    service = AuthService(
        db, paginator, rotation_overlap=settings.rotation_overlap, limits=limits, on_key_changed=forget_key
    )
    routes = contract_routes()
    authenticator = KeyAuthenticator(service, settings.operator_key_digest, settings.key_cache_ttl_seconds)
    last_use = LastUseRecorder(service.record_last_use)
    recording = asyncio.create_task(last_use.run_forever(), name="last-use")

    def register(server: grpc.aio.Server) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(service, limits), server)
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(
                authenticator,
                signer,
                routes,
                edge_secret=settings.edge_secret,
                limits=limits.cache,
                limiter=limiter,
                last_use=last_use,
            ),
            server,
        )

    async def stop_background() -> None:
        recording.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recording
        await billing_channel.close()
        await store.close()

    return await start_grpc_server(
        service_names=(
            auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
            external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
        ),
        register=register,
        signer=signer,
        host=settings.common.listen_host,
        port=settings.common.port,
        # Envoy calls Check before any identity exists; Check is what creates it.
        public_methods=(CHECK_METHOD,),
        on_stop=(stop_background, db.dispose),
    )
