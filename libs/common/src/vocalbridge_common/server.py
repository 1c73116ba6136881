"""Server bootstrap shared by every service: a grpc.aio server with the common
interceptor, the health service (SERVING once started) and reflection, and a
run loop that drains gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.interceptor import ServerInterceptor

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Request metadata a server accepts, as soft and hard limit alike: between gRPC's defaults
# (8 and 16 KiB) a call is refused at random, with a message naming the headers. The edge
# (auth.Check) limits a client's headers to a quarter of this (headers.MAX_REQUEST_HEADER_BYTES),
# so nothing it passes on comes near it.
MAX_METADATA_BYTES = 64 * 1024


@dataclass
class RunningServer:
    """A started server: the port it bound (useful with port 0) and how to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    on_stop: Sequence[Callable[[], Awaitable[None]]] = ()

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for hook in self.on_stop:
            await hook()


async def start_grpc_server(
    *,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    signer: IdentitySigner,
    host: str,
    port: int,
    public_methods: tuple[str, ...] = (),
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
) -> RunningServer:
    """Builds, starts and returns the server. `on_stop` hooks release what the caller built
    for it (database engine, channels); they run on stop and also when starting fails, so
    a service's `create_server` needs no clean-up of its own."""
    try:
        server = grpc.aio.server(
            interceptors=[ServerInterceptor(signer, public_methods)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        register(server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise RuntimeError(f"could not bind {host}:{port}")
        await server.start()
        for name in ("", *service_names):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        for hook in on_stop:
            await hook()
        raise
    return RunningServer(server=server, port=bound, health=health_servicer, on_stop=tuple(on_stop))


async def serve_until_signalled(running: RunningServer, grace_seconds: float) -> None:
    """Blocks until SIGTERM or SIGINT, then stops accepting calls and lets in-flight ones finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving", extra={"port": running.port})
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": grace_seconds})
    await running.stop(grace_seconds)
    log.info("stopped")
