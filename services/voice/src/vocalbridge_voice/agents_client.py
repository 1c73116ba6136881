"""The agents service as the voice service sees it: an agent version's voice settings,
through the agents RPC with the caller's identity. Versions are immutable, so a version
once read is kept (bounded, least recently used first out)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import grpc

from vocalbridge.agents.v1 import agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_common.clients import forwarded_metadata
from vocalbridge_common.errors import AgentNotFound, Unavailable


@dataclass(frozen=True)
class AgentVoice:
    """An agent version's voice settings, as stored (not yet checked against this gateway)."""

    agent: str
    voice: str
    words_per_minute: int


class AgentVoices:
    def __init__(self, channel: grpc.aio.Channel, cache_size: int = 10_000) -> None:
        self._stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        self._cache: OrderedDict[tuple[str, str, int], AgentVoice] = OrderedDict()
        self._cache_size = cache_size

    async def of_version(self, tenant_id: str, agent: str, version: int, timeout: float) -> AgentVoice:
        key = (tenant_id, agent, version)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        try:
            message = await self._stub.GetAgentVersion(
                agents_service_pb2.GetAgentVersionRequest(name=f"{agent}/versions/{version}"),
                metadata=forwarded_metadata(),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise AgentNotFound(agent) from None
            raise Unavailable(
                f"the agents service could not be reached ({error.code().name})", reason="AGENTS_UNAVAILABLE"
            ) from None
        found = AgentVoice(agent, message.voice.voice, message.voice.words_per_minute)
        self._cache[key] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found
