"""A trivial gRPC service for the benchmark baseline: vocalbridge.echo.v1.EchoService/Echo
answers with the request's own bytes (request and response are one message type), through a
generic handler, so no generated code is needed; Envoy only needs the descriptor set.

    python bench/echo/server.py --port 50099

It uses grpc.aio like the product services, with none of their work (no interceptors, no
database, no logging per request). Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

SERVICE = "vocalbridge.echo.v1.EchoService"


async def echo(request: bytes, context) -> bytes:
    return request


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        # No (de)serializers: the handler sees and returns the raw message bytes.
        {"Echo": grpc.unary_unary_rpc_method_handler(echo)},
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot listen on {host}:{port}")
    await server.start()
    print(f"echo server listening on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
