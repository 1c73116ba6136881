"""The agents service as the conversation service sees it: agent configs by
version, through the agents RPC (never its tables), with the caller's identity.

Versions are immutable, so a version once fetched is cached for good (bounded,
least recently used first out); the current version is asked for, except by completions
outside any session (the OpenAI-compatible API), which may use one fetched up to
`recent_seconds` ago: an agent's change reaches them within that time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc
from vocalbridge_common.clients import forwarded_metadata
from vocalbridge_common.errors import AgentNotFound, DomainError, Unavailable
from vocalbridge_common.protoconv import EPOCH, from_timestamp
from vocalbridge_conversation.domain.chat import Model
from vocalbridge_conversation.domain.sessions import agent_name
from vocalbridge_conversation.domain.turns import AgentConfig

# Agents per ListAgents page when every agent is read (the most the agents service gives).
LIST_PAGE_SIZE = 1000


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
    def __init__(
        self,
        channel: grpc.aio.Channel,
        cache_size: int = 10_000,
        *,
        recent_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = agents_service_pb2_grpc.AgentServiceStub(channel)
        self._versions: OrderedDict[tuple[str, str, int], AgentConfig] = OrderedDict()
        self._cache_size = cache_size
        # (tenant, agent) → (when fetched, its current version then).
        self._recent: OrderedDict[tuple[str, str], tuple[float, AgentConfig]] = OrderedDict()
        self._recent_seconds = recent_seconds
        self._monotonic = monotonic

    async def current(self, agent_id: str, timeout: float) -> AgentConfig:
        name = agent_name(agent_id)
        try:
            agent = await self._stub.GetAgent(
                agents_service_pb2.GetAgentRequest(name=name), metadata=forwarded_metadata(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, name) from None
        return _config(agent_id, agent)

    async def recent(self, tenant_id: str, agent_id: str, timeout: float) -> AgentConfig:
        """The agent's current version as fetched at most `recent_seconds` ago. Only found
        agents are kept (by tenant: the caller's identity fetched them), so a new agent is
        usable at once and another tenant's is never served from here."""
        key = (tenant_id, agent_id)
        now = self._monotonic()
        cached = self._recent.get(key)
        if cached is not None and now - cached[0] < self._recent_seconds:
            return cached[1]
        config = await self.current(agent_id, timeout)
        self._recent[key] = (now, config)
        self._recent.move_to_end(key)
        if len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)
        return config

    async def models(self, timeout: float) -> list[Model]:
        """Every agent of the caller's tenant, as a model of the OpenAI-compatible API,
        read page by page within `timeout` seconds in all."""
        models: list[Model] = []
        token = ""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    page = await self._stub.ListAgents(
                        agents_service_pb2.ListAgentsRequest(page_size=LIST_PAGE_SIZE, page_token=token),
                        metadata=forwarded_metadata(),
                        timeout=timeout,
                    )
                    models += [
                        Model(a.name, a.display_name, from_timestamp(a, "create_time") or EPOCH) for a in page.agents
                    ]
                    token = page.next_page_token
                    if not token:
                        return models
        except (grpc.aio.AioRpcError, TimeoutError) as error:
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "DEADLINE_EXCEEDED"
            raise Unavailable(
                f"the agents service could not be reached ({code})", reason="AGENTS_UNAVAILABLE"
            ) from None

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
