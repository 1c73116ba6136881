"""The agents service as the conversation service sees it: agent configs by
version, through the agents RPC (never its tables), with the caller's identity.

Versions are immutable, so a version once fetched is cached for good (bounded,
least recently used first out); the current version is always asked for.
"""

from __future__ import annotations

from collections import OrderedDict

import grpc

from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_common.clients import forwarded_metadata
from vocalbridge_common.errors import AgentNotFound, DomainError, Unavailable
from vocalbridge_conversation.domain.sessions import agent_name
from vocalbridge_conversation.domain.turns import AgentConfig


def _config(agent_id: str, message: agent_pb2.Agent | agent_pb2.AgentVersion) -> AgentConfig:
    parameters = message.parameters
    return AgentConfig(
        agent_id=agent_id,
        version=message.version,
        system_prompt=message.system_prompt,
        primary_provider=message.primary_provider,
        fallback_provider=message.fallback_provider or None,
        model=message.model,
        temperature=parameters.temperature if parameters.HasField("temperature") else None,
        top_p=parameters.top_p if parameters.HasField("top_p") else None,
        max_output_tokens=parameters.max_output_tokens if parameters.HasField("max_output_tokens") else None,
    )


class AgentDirectory:
    def __init__(self, channel: grpc.aio.Channel, cache_size: int = 10_000) -> None:
        self._stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        self._versions: OrderedDict[tuple[str, str, int], AgentConfig] = OrderedDict()
        self._cache_size = cache_size

    async def current(self, agent_id: str, timeout: float) -> AgentConfig:
        name = agent_name(agent_id)
        try:
            agent = await self._stub.GetAgent(
                agents_service_pb2.GetAgentRequest(name=name), metadata=forwarded_metadata(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, name) from None
        return _config(agent_id, agent)

    async def version(self, tenant_id: str, agent_id: str, version: int, timeout: float) -> AgentConfig:
        cache_key = (tenant_id, agent_id, version)
        cached = self._versions.get(cache_key)
        if cached is not None:
            self._versions.move_to_end(cache_key)
            return cached
        name = f"agents/{agent_id}/versions/{version}"
        try:
            message = await self._stub.GetAgentVersion(
                agents_service_pb2.GetAgentVersionRequest(name=name), metadata=forwarded_metadata(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, agent_name(agent_id)) from None
        config = _config(agent_id, message)
        self._versions[cache_key] = config
        if len(self._versions) > self._cache_size:
            self._versions.popitem(last=False)
        return config

    @staticmethod
    def _translate(error: grpc.aio.AioRpcError, name: str) -> DomainError:
        if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return AgentNotFound(name)
        return Unavailable(
            f"the agents service could not be reached ({error.code().name})", reason="AGENTS_UNAVAILABLE"
        )
