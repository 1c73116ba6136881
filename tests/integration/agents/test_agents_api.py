"""AgentService through real stubs against PostgreSQL: create, get, list, update
with masks and etags, versions, delete, validation."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from google.protobuf import field_mask_pb2
from sqlalchemy import create_engine, text

from tests.integration.agents.agents_testkit import agent_message, expect_failure
from vocalbridge.agents.v1 import agent_pb2
from vocalbridge.agents.v1 import agents_service_pb2 as pb
from vocalbridge_agents.models import AgentsBase
from vocalbridge_common.db import sync_url

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ABORTED = grpc.StatusCode.ABORTED


async def create(stub, md, **fields) -> agent_pb2.Agent:
    return await stub.CreateAgent(pb.CreateAgentRequest(agent=agent_message(**fields)), metadata=md)


async def update(stub, md, agent: agent_pb2.Agent, *paths: str) -> agent_pb2.Agent:
    mask = field_mask_pb2.FieldMask(paths=list(paths))
    return await stub.UpdateAgent(pb.UpdateAgentRequest(agent=agent, update_mask=mask), metadata=md)


async def list_all(stub, md, page_size: int = 0) -> list[agent_pb2.Agent]:
    agents, token = [], ""
    while True:
        page = await stub.ListAgents(pb.ListAgentsRequest(page_size=page_size, page_token=token), metadata=md)
        agents.extend(page.agents)
        token = page.next_page_token
        if not token:
            return agents


async def versions_of(stub, md, name: str) -> list[agent_pb2.AgentVersion]:
    response = await stub.ListAgentVersions(pb.ListAgentVersionsRequest(parent=name), metadata=md)
    return list(response.agent_versions)


# -- create / get / list ------------------------------------------------------------


async def test_create_returns_version_1_and_get_returns_the_same(stub, md):
    created = await create(
        stub,
        md,
        model="small-1",
        parameters=agent_pb2.ModelParameters(temperature=0.7, top_p=0.9, max_output_tokens=512),
        voice=agent_pb2.VoiceSettings(voice="en-us", words_per_minute=160),
    )

    assert created.name.startswith("agents/agt_")
    assert created.version == 1
    assert created.etag
    assert created.create_time.seconds > 0 and created.update_time == created.create_time
    assert (created.display_name, created.primary_provider, created.fallback_provider, created.model) == (
        "Support",
        "vendorA",
        "vendorB",
        "small-1",
    )
    assert created.parameters.temperature == pytest.approx(0.7)
    assert created.parameters.max_output_tokens == 512
    assert created.voice.voice == "en-us" and created.voice.words_per_minute == 160
    assert await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md) == created


async def test_unset_parameters_stay_unset(stub, md):
    created = await create(stub, md, parameters=agent_pb2.ModelParameters(top_p=0.5))

    fetched = await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md)
    assert fetched.parameters.HasField("top_p")
    assert not fetched.parameters.HasField("temperature")
    assert not fetched.parameters.HasField("max_output_tokens")
    assert not fetched.HasField("voice")


async def test_output_only_fields_in_create_are_ignored(stub, md):
    created = await create(stub, md, name="agents/agt_00000000000000000000000000", version=42, etag="mine")

    assert created.name != "agents/agt_00000000000000000000000000"
    assert created.version == 1 and created.etag != "mine"


async def test_list_pages_through_every_agent_oldest_first(stub, md):
    names = [(await create(stub, md, display_name=f"Agent {i}")).name for i in range(5)]

    pages = []
    token = ""
    while True:
        page = await stub.ListAgents(pb.ListAgentsRequest(page_size=2, page_token=token), metadata=md)
        pages.append([agent.name for agent in page.agents])
        token = page.next_page_token
        if not token:
            break

    assert pages == [names[0:2], names[2:4], names[4:5]]


async def test_list_with_default_page_size_returns_everything_in_one_page(stub, md):
    names = [(await create(stub, md, display_name=f"Agent {i}")).name for i in range(3)]

    page = await stub.ListAgents(pb.ListAgentsRequest(), metadata=md)

    assert [agent.name for agent in page.agents] == names
    assert page.next_page_token == ""


async def test_a_bad_page_token_is_refused(stub, md, as_tenant, tenant):
    for i in range(3):
        await create(stub, md, display_name=f"Agent {i}")
    page = await stub.ListAgents(pb.ListAgentsRequest(page_size=1), metadata=md)
    assert page.next_page_token

    garbage = stub.ListAgents(pb.ListAgentsRequest(page_token="not-a-token"), metadata=md)
    failure = await expect_failure(garbage, INVALID, "INVALID_PAGE_TOKEN")
    assert failure.fields == {"page_token"}

    tampered = page.next_page_token[:-2] + ("AA" if not page.next_page_token.endswith("AA") else "BB")
    await expect_failure(
        stub.ListAgents(pb.ListAgentsRequest(page_token=tampered), metadata=md), INVALID, "INVALID_PAGE_TOKEN"
    )
    # A token belongs to its query: not to another list, nor to another tenant.
    agent_name = page.agents[0].name
    await expect_failure(
        stub.ListAgentVersions(
            pb.ListAgentVersionsRequest(parent=agent_name, page_token=page.next_page_token), metadata=md
        ),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )
    await expect_failure(
        stub.ListAgents(pb.ListAgentsRequest(page_token=page.next_page_token), metadata=as_tenant(tenant + "x")),
        INVALID,
        "INVALID_PAGE_TOKEN",
    )


async def test_a_negative_page_size_is_refused(stub, md):
    failure = await expect_failure(stub.ListAgents(pb.ListAgentsRequest(page_size=-1), metadata=md), INVALID)
    assert failure.fields == {"page_size"}


# -- update, versions --------------------------------------------------------------


async def test_update_changes_only_masked_fields_and_records_a_version(stub, md):
    created = await create(stub, md, parameters=agent_pb2.ModelParameters(temperature=0.2, top_p=0.8))

    patch = agent_pb2.Agent(
        name=created.name,
        display_name="Support v2",
        system_prompt="ignored: not in the mask",
        parameters=agent_pb2.ModelParameters(temperature=1.5, top_p=0.1),
    )
    updated = await update(stub, md, patch, "display_name", "parameters.temperature")

    assert updated.version == 2
    assert updated.etag != created.etag
    assert updated.display_name == "Support v2"
    assert updated.system_prompt == created.system_prompt
    assert updated.parameters.temperature == pytest.approx(1.5)
    assert updated.parameters.top_p == pytest.approx(0.8)
    assert updated.create_time == created.create_time
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()
    assert await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md) == updated

    second = await update(stub, md, agent_pb2.Agent(name=created.name, model="large-2"), "model")
    assert second.version == 3

    versions = await versions_of(stub, md, created.name)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.name for v in versions] == [f"{created.name}/versions/{n}" for n in (3, 2, 1)]
    v3, v2, v1 = versions
    assert (v1.display_name, v1.model, v1.parameters.temperature) == ("Support", "", pytest.approx(0.2))
    assert (v2.display_name, v2.model, v2.parameters.temperature) == ("Support v2", "", pytest.approx(1.5))
    assert (v3.display_name, v3.model) == ("Support v2", "large-2")
    assert v1.create_time == created.create_time and v3.create_time == second.update_time

    pinned = await stub.GetAgentVersion(pb.GetAgentVersionRequest(name=f"{created.name}/versions/1"), metadata=md)
    assert pinned == v1


async def test_a_message_path_replaces_the_whole_message(stub, md):
    created = await create(
        stub,
        md,
        parameters=agent_pb2.ModelParameters(temperature=0.2, max_output_tokens=100),
        voice=agent_pb2.VoiceSettings(voice="en-gb", words_per_minute=200),
    )

    patch = agent_pb2.Agent(name=created.name, parameters=agent_pb2.ModelParameters(top_p=0.5))
    updated = await update(stub, md, patch, "parameters", "voice")

    assert not updated.parameters.HasField("temperature")
    assert not updated.parameters.HasField("max_output_tokens")
    assert updated.parameters.top_p == pytest.approx(0.5)
    assert not updated.HasField("voice")


async def test_subfield_paths_change_one_subfield(stub, md):
    created = await create(stub, md, voice=agent_pb2.VoiceSettings(voice="en-gb", words_per_minute=200))

    updated = await update(
        stub, md, agent_pb2.Agent(name=created.name, voice=agent_pb2.VoiceSettings(voice="de")), "voice.voice"
    )

    assert (updated.voice.voice, updated.voice.words_per_minute) == ("de", 200)


async def test_an_explicit_mask_can_clear_a_field(stub, md):
    created = await create(stub, md, parameters=agent_pb2.ModelParameters(temperature=0.3))

    updated = await update(stub, md, agent_pb2.Agent(name=created.name), "fallback_provider", "parameters.temperature")

    assert updated.fallback_provider == ""
    assert not updated.parameters.HasField("temperature")


async def test_camel_case_mask_paths_are_accepted(stub, md):
    created = await create(stub, md)

    patch = agent_pb2.Agent(
        name=created.name, system_prompt="New prompt", parameters=agent_pb2.ModelParameters(max_output_tokens=64)
    )
    updated = await update(stub, md, patch, "systemPrompt", "parameters.maxOutputTokens")

    assert updated.system_prompt == "New prompt"
    assert updated.parameters.max_output_tokens == 64


async def test_an_empty_mask_updates_the_populated_fields(stub, md):
    created = await create(stub, md, model="m1", parameters=agent_pb2.ModelParameters(temperature=0.2, top_p=0.9))

    patch = agent_pb2.Agent(
        name=created.name,
        etag=created.etag,
        display_name="Renamed",
        parameters=agent_pb2.ModelParameters(top_p=0.3),
    )
    updated = await update(stub, md, patch)

    assert updated.version == 2
    assert updated.display_name == "Renamed"
    assert updated.model == "m1" and updated.system_prompt == created.system_prompt
    assert updated.parameters.top_p == pytest.approx(0.3)
    assert updated.parameters.temperature == pytest.approx(0.2)


@pytest.mark.parametrize(
    "path", ["name", "version", "etag", "create_time", "update_time", "updateTime", "owner", "parameters.seed", ""]
)
async def test_unknown_or_immutable_mask_paths_are_refused(stub, md, path):
    created = await create(stub, md)

    patch = agent_pb2.Agent(name=created.name, display_name="Changed")
    failure = await expect_failure(update(stub, md, patch, "display_name", path), INVALID, "INVALID_ARGUMENT")

    assert failure.fields == {"update_mask"}
    assert await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md) == created


async def test_a_stale_etag_is_refused_and_the_current_one_accepted(stub, md):
    created = await create(stub, md)
    changed = await update(stub, md, agent_pb2.Agent(name=created.name, display_name="Second"), "display_name")

    stale = agent_pb2.Agent(name=created.name, etag=created.etag, display_name="Third")
    await expect_failure(update(stub, md, stale, "display_name"), ABORTED, "ETAG_MISMATCH")
    assert (await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md)) == changed

    fresh = agent_pb2.Agent(name=created.name, etag=changed.etag, display_name="Third")
    assert (await update(stub, md, fresh, "display_name")).version == 3


async def test_an_update_that_changes_nothing_creates_no_version(stub, md):
    created = await create(stub, md)

    same = await update(
        stub, md, agent_pb2.Agent(name=created.name, etag=created.etag, display_name="Support"), "display_name"
    )

    assert same == created
    assert len(await versions_of(stub, md, created.name)) == 1


async def test_concurrent_updates_from_one_etag_let_exactly_one_through(stub, md):
    created = await create(stub, md)

    patches = [agent_pb2.Agent(name=created.name, etag=created.etag, display_name=f"Writer {i}") for i in range(8)]
    results = await asyncio.gather(*(update(stub, md, p, "display_name") for p in patches), return_exceptions=True)

    winners = [r for r in results if isinstance(r, agent_pb2.Agent)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 7
    assert {loser.code() for loser in losers} == {ABORTED}
    assert [v.version for v in await versions_of(stub, md, created.name)] == [2, 1]


async def test_concurrent_updates_without_etag_all_apply_in_sequence(stub, md):
    created = await create(stub, md)

    patches = [agent_pb2.Agent(name=created.name, model=f"model-{i}") for i in range(5)]
    results = await asyncio.gather(*(update(stub, md, p, "model") for p in patches))

    assert sorted(r.version for r in results) == [2, 3, 4, 5, 6]
    versions = await versions_of(stub, md, created.name)
    assert [v.version for v in versions] == [6, 5, 4, 3, 2, 1]
    assert {v.model for v in versions[:5]} == {f"model-{i}" for i in range(5)}


async def test_versions_are_paginated_newest_first(stub, md):
    created = await create(stub, md)
    for i in range(4):
        await update(stub, md, agent_pb2.Agent(name=created.name, model=f"m{i}"), "model")

    seen, token = [], ""
    while True:
        page = await stub.ListAgentVersions(
            pb.ListAgentVersionsRequest(parent=created.name, page_size=2, page_token=token), metadata=md
        )
        seen.append([v.version for v in page.agent_versions])
        token = page.next_page_token
        if not token:
            break

    assert seen == [[5, 4], [3, 2], [1]]


# -- delete ------------------------------------------------------------------------


async def test_delete_hides_the_agent_but_keeps_its_versions(stub, md):
    created = await create(stub, md)
    kept = await create(stub, md, display_name="Kept")
    await expect_failure(
        stub.DeleteAgent(pb.DeleteAgentRequest(name=created.name, etag="stale"), metadata=md), ABORTED, "ETAG_MISMATCH"
    )

    await stub.DeleteAgent(pb.DeleteAgentRequest(name=created.name, etag=created.etag), metadata=md)

    await expect_failure(
        stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md), NOT_FOUND, "AGENT_NOT_FOUND"
    )
    assert [a.name for a in await list_all(stub, md)] == [kept.name]
    version = await stub.GetAgentVersion(pb.GetAgentVersionRequest(name=f"{created.name}/versions/1"), metadata=md)
    assert version.display_name == "Support"
    assert [v.version for v in await versions_of(stub, md, created.name)] == [1]
    # Gone for every further change.
    patch = agent_pb2.Agent(name=created.name, display_name="Back")
    await expect_failure(update(stub, md, patch, "display_name"), NOT_FOUND, "AGENT_NOT_FOUND")
    await expect_failure(
        stub.DeleteAgent(pb.DeleteAgentRequest(name=created.name), metadata=md), NOT_FOUND, "AGENT_NOT_FOUND"
    )


async def test_delete_without_etag(stub, md):
    created = await create(stub, md)

    await stub.DeleteAgent(pb.DeleteAgentRequest(name=created.name), metadata=md)

    assert await list_all(stub, md) == []


# -- names -----------------------------------------------------------------------


# Well-formed, but no agent has this id.
UNKNOWN_AGENT = "agents/agt_0123456789abcdefghjkmnpqrs"


@pytest.mark.parametrize("name", ["agents/nope", UNKNOWN_AGENT, "agents/ses_0123456789abcdefghjkmnpqrs"])
async def test_names_that_cannot_exist_are_not_found(stub, md, name):
    await expect_failure(stub.GetAgent(pb.GetAgentRequest(name=name), metadata=md), NOT_FOUND, "AGENT_NOT_FOUND")


@pytest.mark.parametrize("name", ["", "sessions/ses_x", "agents/", "agents/agt_x/versions/1", "agt_x"])
async def test_malformed_names_are_invalid(stub, md, name):
    failure = await expect_failure(stub.GetAgent(pb.GetAgentRequest(name=name), metadata=md), INVALID)
    assert failure.fields == {"name"}


async def test_update_without_a_name_is_invalid(stub, md):
    failure = await expect_failure(update(stub, md, agent_pb2.Agent(display_name="x"), "display_name"), INVALID)
    assert failure.fields == {"agent.name"}


async def test_missing_versions_are_not_found(stub, md):
    created = await create(stub, md)

    for suffix in ("2", "0", "abc", "99999999999"):
        await expect_failure(
            stub.GetAgentVersion(pb.GetAgentVersionRequest(name=f"{created.name}/versions/{suffix}"), metadata=md),
            NOT_FOUND,
            "AGENT_VERSION_NOT_FOUND",
        )
    await expect_failure(
        stub.GetAgentVersion(pb.GetAgentVersionRequest(name=f"{UNKNOWN_AGENT}/versions/1"), metadata=md),
        NOT_FOUND,
        "AGENT_NOT_FOUND",
    )
    await expect_failure(
        stub.ListAgentVersions(pb.ListAgentVersionsRequest(parent=UNKNOWN_AGENT), metadata=md),
        NOT_FOUND,
        "AGENT_NOT_FOUND",
    )
    failure = await expect_failure(
        stub.GetAgentVersion(pb.GetAgentVersionRequest(name=created.name), metadata=md), INVALID
    )
    assert failure.fields == {"name"}


# -- validation ----------------------------------------------------------------------

P = agent_pb2.ModelParameters
V = agent_pb2.VoiceSettings

INVALID_AGENTS = [
    ({"display_name": ""}, "agent.display_name"),
    ({"display_name": "x" * 101}, "agent.display_name"),
    ({"display_name": " padded"}, "agent.display_name"),
    ({"display_name": "line\nbreak"}, "agent.display_name"),
    ({"system_prompt": "x" * 16_001}, "agent.system_prompt"),
    ({"system_prompt": "nul \x00 inside"}, "agent.system_prompt"),
    ({"primary_provider": ""}, "agent.primary_provider"),
    ({"primary_provider": "vendorZ"}, "agent.primary_provider"),
    ({"primary_provider": "vendora"}, "agent.primary_provider"),
    ({"fallback_provider": "vendorZ"}, "agent.fallback_provider"),
    ({"fallback_provider": "vendorA"}, "agent.fallback_provider"),
    ({"model": "m" * 101}, "agent.model"),
    ({"model": "tab\tmodel"}, "agent.model"),
    ({"parameters": P(temperature=-0.01)}, "agent.parameters.temperature"),
    ({"parameters": P(temperature=2.01)}, "agent.parameters.temperature"),
    ({"parameters": P(temperature=math.nan)}, "agent.parameters.temperature"),
    ({"parameters": P(top_p=0.0)}, "agent.parameters.top_p"),
    ({"parameters": P(top_p=1.0001)}, "agent.parameters.top_p"),
    ({"parameters": P(max_output_tokens=0)}, "agent.parameters.max_output_tokens"),
    ({"parameters": P(max_output_tokens=8193)}, "agent.parameters.max_output_tokens"),
    ({"voice": V(voice="en us")}, "agent.voice.voice"),
    ({"voice": V(voice="v" * 51)}, "agent.voice.voice"),
    ({"voice": V(words_per_minute=79)}, "agent.voice.words_per_minute"),
    ({"voice": V(words_per_minute=451)}, "agent.voice.words_per_minute"),
    ({"voice": V(words_per_minute=-1)}, "agent.voice.words_per_minute"),
]


@pytest.mark.parametrize(("fields", "field_path"), INVALID_AGENTS, ids=[path for _, path in INVALID_AGENTS])
async def test_create_refuses_each_invalid_field_and_writes_nothing(stub, md, fields, field_path):
    failure = await expect_failure(create(stub, md, **fields), INVALID, "INVALID_ARGUMENT")

    assert failure.fields == {field_path}
    assert await list_all(stub, md) == []


async def test_every_violation_is_reported_at_once(stub, md):
    failure = await expect_failure(
        create(stub, md, display_name="", primary_provider="nope", parameters=P(top_p=2)), INVALID
    )
    assert failure.fields == {"agent.display_name", "agent.primary_provider", "agent.parameters.top_p"}


async def test_boundary_values_are_accepted(stub, md):
    for fields in (
        {"display_name": "x" * 100, "system_prompt": "y" * 16_000, "model": "m" * 100, "fallback_provider": ""},
        {"parameters": P(temperature=0.0, top_p=1.0, max_output_tokens=1), "voice": V(voice="v" * 50)},
        {"parameters": P(temperature=2.0, max_output_tokens=8192), "voice": V(voice="en-us+f3", words_per_minute=80)},
        {"voice": V(voice="mb/mb-en1", words_per_minute=450), "system_prompt": "multi\nline\tprompt"},
    ):
        assert (await create(stub, md, **fields)).version == 1


async def test_update_validates_the_result_and_changes_nothing_when_invalid(stub, md):
    created = await create(stub, md)

    bad = agent_pb2.Agent(name=created.name, primary_provider="vendorB", parameters=P(temperature=3))
    failure = await expect_failure(update(stub, md, bad, "primary_provider", "parameters"), INVALID)

    # vendorB as primary collides with the existing fallback vendorB.
    assert failure.fields == {"agent.fallback_provider", "agent.parameters.temperature"}
    assert await stub.GetAgent(pb.GetAgentRequest(name=created.name), metadata=md) == created
    assert len(await versions_of(stub, md, created.name)) == 1


# -- schema ---------------------------------------------------------------------------


def test_the_migrations_create_exactly_the_models_tables(agents_database):
    engine = create_engine(sync_url(agents_database))
    try:
        with engine.connect() as connection:
            connection.execute(text('SET search_path TO "agents"'))
            differences = compare_metadata(MigrationContext.configure(connection), AgentsBase.metadata)
    finally:
        engine.dispose()
    assert differences == []
