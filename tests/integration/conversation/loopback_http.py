"""A minimal HTTP/1.1 server on loopback for the provider adapter tests, on asyncio streams
(one request per connection, `Connection: close`). It records every request, and each test
tells it how to answer with handlers: one per request, the last one repeating.

Also the handlers and helpers both adapters' tests use: fixed replies, an event stream,
a server that never answers, and collecting what a provider call returned or raised."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from vocalbridge_conversation.providers import Completion, ProviderError, StreamChunk

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """Serves on 127.0.0.1 at a free port; `base_url` is its root plus `base_path`."""

    def __init__(self, base_path: str = "") -> None:
        self.received: list[Received] = []
        self.handlers: list[Handler] = []  # one per request, the last one repeats
        self._base_path = base_path
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}{self._base_path}"

    async def stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(method, path, headers, body))
            handler = self.handlers[min(len(self.received) - 1, len(self.handlers) - 1)]
            await handler(self.received[-1], writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def loopback_server(base_path: str = "") -> AsyncIterator[LoopbackServer]:
    """A started LoopbackServer, stopped on the way out (for fixtures)."""
    server = LoopbackServer(base_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def head(status: int, content_type: str, extra: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def raw(
    status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
) -> Handler:
    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(head(status, content_type, headers, len(body)) + body)

    return handler


def reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Handler:
    return raw(status, json.dumps(payload).encode(), headers=headers)


def event_stream(frames: Iterable[str], pause: float = 0.0, then_hang: bool = False) -> Handler:
    """A 200 `text/event-stream` of `frames` (each a whole SSE event, its blank line
    included), each flushed, `pause` seconds apart; then the connection closes, or
    stays open and silent with `then_hang`."""

    async def handler(request: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, "text/event-stream"))
        for frame in frames:
            writer.write(frame.encode())
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if then_hang:
            await asyncio.sleep(3600)

    return handler


async def hang(request: Received, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def failure_of(call: Awaitable[Any]) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        await call
    return raised.value


async def drain(
    stream: AsyncGenerator[StreamChunk | Completion, None],
) -> tuple[list[str], Completion | None, ProviderError | None]:
    """The text deltas, the final Completion and the failure of a provider's stream."""
    deltas: list[str] = []
    final = None
    try:
        async for event in stream:
            if isinstance(event, StreamChunk):
                deltas.append(event.text_delta)
            else:
                final = event
    except ProviderError as failure:
        return deltas, final, failure
    return deltas, final, None
