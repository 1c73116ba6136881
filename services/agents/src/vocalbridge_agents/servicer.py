"""AgentService over gRPC: protobuf ⇄ domain, nothing else."""

from __future__ import annotations

from google.protobuf import empty_pb2
from grpc.aio import ServicerContext

from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2_grpc
from vocalbridge.agents.v1 import agents_service_pb2 as pb
from vocalbridge_agents.domain import (
    PARAMETER_FIELDS,
    SCALAR_FIELDS,
    VOICE_FIELDS,
    Agent,
    AgentConfig,
    AgentVersion,
    ModelParameters,
    VoiceSettings,
)
from vocalbridge_agents.service import AgentService
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.protoconv import to_timestamp


def config_from_proto(message: agent_pb2.Agent) -> AgentConfig:
    parameters = message.parameters
    return AgentConfig(
        display_name=message.display_name,
        system_prompt=message.system_prompt,
        primary_provider=message.primary_provider,
        fallback_provider=message.fallback_provider,
        model=message.model,
        parameters=ModelParameters(
            temperature=parameters.temperature if parameters.HasField("temperature") else None,
            top_p=parameters.top_p if parameters.HasField("top_p") else None,
            max_output_tokens=parameters.max_output_tokens if parameters.HasField("max_output_tokens") else None,
        ),
        voice=VoiceSettings(voice=message.voice.voice, words_per_minute=message.voice.words_per_minute),
    )


def populated_paths(message: agent_pb2.Agent) -> frozenset[str]:
    """The updatable leaves set in `message`: the implied update mask (AIP-134)."""
    paths = {name for name in SCALAR_FIELDS if getattr(message, name)}
    paths |= {f"parameters.{name}" for name in PARAMETER_FIELDS if message.parameters.HasField(name)}
    paths |= {f"voice.{name}" for name in VOICE_FIELDS if getattr(message.voice, name)}
    return frozenset(paths)


def fill_config(message: agent_pb2.Agent | agent_pb2.AgentVersion, config: AgentConfig) -> None:
    """Writes `config` into an Agent or an AgentVersion, which share these field names."""
    message.display_name = config.display_name
    message.system_prompt = config.system_prompt
    message.primary_provider = config.primary_provider
    message.fallback_provider = config.fallback_provider
    message.model = config.model
    for name in PARAMETER_FIELDS:
        value = getattr(config.parameters, name)
        if value is not None:
            setattr(message.parameters, name, value)
    if config.voice != VoiceSettings():
        message.voice.voice = config.voice.voice
        message.voice.words_per_minute = config.voice.words_per_minute


def agent_to_proto(agent: Agent) -> agent_pb2.Agent:
    message = agent_pb2.Agent(
        name=agent.name,
        version=agent.version,
        etag=agent.etag,
        create_time=to_timestamp(agent.create_time),
        update_time=to_timestamp(agent.update_time),
    )
    fill_config(message, agent.config)
    return message


def version_to_proto(version: AgentVersion) -> agent_pb2.AgentVersion:
    message = agent_pb2.AgentVersion(
        name=version.name, version=version.version, create_time=to_timestamp(version.create_time)
    )
    fill_config(message, version.config)
    return message


class AgentServicer(agents_service_pb2_grpc.AgentServiceServicer):
    """Each RPC: the caller's tenant from the verified identity, the request as domain
    values, one use case, the result as protobuf."""

    def __init__(self, service: AgentService) -> None:
        self._service = service

    async def CreateAgent(
        self, request: pb.CreateAgentRequest, context: ServicerContext[pb.CreateAgentRequest, agent_pb2.Agent]
    ) -> agent_pb2.Agent:
        return agent_to_proto(await self._service.create_agent(current_tenant_id(), config_from_proto(request.agent)))

    async def GetAgent(
        self, request: pb.GetAgentRequest, context: ServicerContext[pb.GetAgentRequest, agent_pb2.Agent]
    ) -> agent_pb2.Agent:
        return agent_to_proto(await self._service.get_agent(current_tenant_id(), request.name))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: ServicerContext[pb.ListAgentsRequest, pb.ListAgentsResponse]
    ) -> pb.ListAgentsResponse:
        page = await self._service.list_agents(current_tenant_id(), request.page_size, request.page_token)
        return pb.ListAgentsResponse(
            agents=[agent_to_proto(agent) for agent in page.items], next_page_token=page.next_page_token
        )

    async def UpdateAgent(
        self, request: pb.UpdateAgentRequest, context: ServicerContext[pb.UpdateAgentRequest, agent_pb2.Agent]
    ) -> agent_pb2.Agent:
        agent = await self._service.update_agent(
            current_tenant_id(),
            request.agent.name,
            config_from_proto(request.agent),
            mask_paths=tuple(request.update_mask.paths),
            populated_paths=populated_paths(request.agent),
            etag=request.agent.etag,
        )
        return agent_to_proto(agent)

    async def DeleteAgent(
        self, request: pb.DeleteAgentRequest, context: ServicerContext[pb.DeleteAgentRequest, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        await self._service.delete_agent(current_tenant_id(), request.name, request.etag)
        return empty_pb2.Empty()

    async def ListAgentVersions(
        self,
        request: pb.ListAgentVersionsRequest,
        context: ServicerContext[pb.ListAgentVersionsRequest, pb.ListAgentVersionsResponse],
    ) -> pb.ListAgentVersionsResponse:
        page = await self._service.list_agent_versions(
            current_tenant_id(), request.parent, request.page_size, request.page_token
        )
        return pb.ListAgentVersionsResponse(
            agent_versions=[version_to_proto(version) for version in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetAgentVersion(
        self,
        request: pb.GetAgentVersionRequest,
        context: ServicerContext[pb.GetAgentVersionRequest, agent_pb2.AgentVersion],
    ) -> agent_pb2.AgentVersion:
        return version_to_proto(await self._service.get_agent_version(current_tenant_id(), request.name))
