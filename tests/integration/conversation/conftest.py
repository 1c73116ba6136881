"""The conversation server under test: production create_server() on port 0,
with a real agents server beside it, against one PostgreSQL database (a schema
each). Billing is not running unless a test starts it, so prices come from the
seed rows and the outbox fills up."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.agents.agents_testkit import settings_for as agents_settings_for
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc
from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc, session_pb2
from vocalbridge_agents.server import MIGRATIONS_DIR as AGENTS_MIGRATIONS
from vocalbridge_agents.server import create_server as create_agents_server
from vocalbridge_common.db import Database
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_conversation.config import ConversationSettings
from vocalbridge_conversation.server import MIGRATIONS_DIR, create_server

# Fast, deterministic providers; tests override what they exercise.
BASE_ENV = {
    "VB_PROVIDER_VENDORA_LATENCY_MS": "0",
    "VB_PROVIDER_VENDORB_LATENCY_MS": "0",
    "VB_PROVIDER_VENDORA_FAILURE_RATE": "0",
    "VB_PROVIDER_VENDORB_FAILURE_RATE": "0",
    "VB_PROVIDER_SEED": "7",
    "VB_DELIVERY_BACKOFF_BASE_MS": "1",
    "VB_DELIVERY_BACKOFF_CAP_MS": "5",
}


@pytest.fixture(scope="module")
async def agents_port(pg_url):
    migrate(pg_url, "agents", AGENTS_MIGRATIONS)
    migrate(pg_url, "conversation", MIGRATIONS_DIR)
    running = await create_agents_server(agents_settings_for(pg_url))
    yield running.port
    await running.stop(0)


@pytest.fixture
async def database(agents_port, pg_url):
    """The conversation schema through the service's own Database (after the module's migrations)."""
    db = Database(pg_url, "conversation")
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
def conversation_settings(pg_url, agents_port):
    def build(**overrides: str) -> ConversationSettings:
        env = {
            **BASE_ENV,
            "VB_IDENTITY_SECRET": TEST_IDENTITY_SECRET.decode(),
            "VB_CONVERSATION_DATABASE_URL": pg_url,
            "VB_CONVERSATION_PORT": "0",
            "VB_AGENTS_ADDRESS": f"127.0.0.1:{agents_port}",
            "VB_BILLING_ADDRESS": "127.0.0.1:9",  # nothing listens: billing is down
            **overrides,
        }
        return ConversationSettings.from_env(env)

    return build


@pytest.fixture(scope="module")
async def start_conversation(conversation_settings):
    """start_conversation(**env) → a ConversationService stub on a new server with those settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(run_relay: bool = False, **overrides: str):
            running = await create_server(conversation_settings(**overrides), run_relay=run_relay)
            stack.push_async_callback(running.stop, 0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
            stack.push_async_callback(channel.close)
            return conversation_service_pb2_grpc.ConversationServiceStub(channel)

        yield start


@pytest.fixture(scope="module")
async def conversation(start_conversation):
    return await start_conversation()


@pytest.fixture(scope="module")
async def agents(agents_port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{agents_port}") as channel:
        yield agents_service_pb2_grpc.AgentServiceStub(channel)


@pytest.fixture
def tenant() -> str:
    return new_id("ten")


@pytest.fixture
def md(as_tenant, tenant):
    return as_tenant(tenant)


@pytest.fixture
def new_session(agents, md):
    """new_session(stub, **agent fields) → (agent, session) of the test's tenant."""

    async def create(stub, **agent_fields):
        fields = {
            "display_name": "Support",
            "system_prompt": "You are the Acme helper.",
            "primary_provider": "vendorA",
            "fallback_provider": "vendorB",
            **agent_fields,
        }
        agent = await agents.CreateAgent(
            agents_service_pb2.CreateAgentRequest(agent=agent_pb2.Agent(**fields)), metadata=md
        )
        session = await stub.CreateSession(
            conversation_service_pb2.CreateSessionRequest(session=session_pb2.Session(agent=agent.name)), metadata=md
        )
        return agent, session

    return create


def with_key(md, key: str):
    return (*md, ("idempotency-key", key))
