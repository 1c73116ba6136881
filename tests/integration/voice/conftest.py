"""The voice server under test: the production create_server() on port 0, beside real
agents, conversation and billing servers, against one PostgreSQL database (a schema each).
The engines are real: pocketsphinx for speech-to-text, eSpeak NG for replies (fast) and
Piper for the sentences the tests speak (pocketsphinx understands it well). One worker of
each role, started once per module."""

from __future__ import annotations

import contextlib
import io
import wave

import grpc
import pytest

from tests.conftest import TEST_IDENTITY_SECRET
from tests.integration.agents.agents_testkit import settings_for as agents_settings_for
from tests.integration.billing.billing_testkit import settings_for as billing_settings_for
from tests.integration.conversation.conftest import BASE_ENV
from vocalbridge.agents.v1 import agent_pb2, agents_service_pb2, agents_service_pb2_grpc
from vocalbridge.billing.v1 import billing_service_pb2_grpc
from vocalbridge.conversation.v1 import conversation_service_pb2, conversation_service_pb2_grpc, session_pb2
from vocalbridge.voice.v1 import voice_service_pb2, voice_service_pb2_grpc
from vocalbridge_agents.server import MIGRATIONS_DIR as AGENTS_MIGRATIONS
from vocalbridge_agents.server import create_server as create_agents_server
from vocalbridge_billing.server import MIGRATIONS_DIR as BILLING_MIGRATIONS
from vocalbridge_billing.server import create_server as create_billing_server
from vocalbridge_common.config import Env
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_conversation.config import ConversationSettings
from vocalbridge_conversation.server import MIGRATIONS_DIR as CONVERSATION_MIGRATIONS
from vocalbridge_conversation.server import create_server as create_conversation_server
from vocalbridge_voice.config import VoiceSettings
from vocalbridge_voice.server import MIGRATIONS_DIR, create_server

VOICE_ENV = {
    "VB_VOICE_STT_ENGINES": "pocketsphinx",
    "VB_VOICE_TTS_ENGINES": "espeak,piper",
    "VB_VOICE_DEFAULT_VOICE": "espeak/en-us",
    "VB_VOICE_STT_WORKERS": "1",
    "VB_VOICE_TTS_WORKERS": "1",
    "VB_VOICE_MAX_UTTERANCE_SECONDS": "6",
    "VB_RELAY_POLL_INTERVAL_MS": "50",
}


def voice_settings(pg_url: str, ports: dict[str, int], **overrides: str) -> VoiceSettings:
    return VoiceSettings.from_env(
        Env(
            {
                "VB_IDENTITY_SECRET": TEST_IDENTITY_SECRET.decode(),
                "VB_VOICE_DATABASE_URL": pg_url,
                "VB_VOICE_PORT": "0",
                "VB_CONVERSATION_ADDRESS": f"127.0.0.1:{ports['conversation']}",
                "VB_AGENTS_ADDRESS": f"127.0.0.1:{ports['agents']}",
                "VB_BILLING_ADDRESS": f"127.0.0.1:{ports['billing']}",
                **VOICE_ENV,
                **overrides,
            }
        )
    )


@pytest.fixture(scope="module")
async def backends(pg_url):
    """Agents, billing and conversation (with its relay), as for a real turn."""
    for schema, directory in (
        ("agents", AGENTS_MIGRATIONS),
        ("billing", BILLING_MIGRATIONS),
        ("conversation", CONVERSATION_MIGRATIONS),
        ("voice", MIGRATIONS_DIR),
    ):
        migrate(pg_url, schema, directory)
    async with contextlib.AsyncExitStack() as stack:
        agents = await create_agents_server(agents_settings_for(pg_url))
        stack.push_async_callback(agents.stop, 0)
        billing = await create_billing_server(billing_settings_for(pg_url))
        stack.push_async_callback(billing.stop, 0)
        conversation = await create_conversation_server(
            ConversationSettings.from_env(
                {
                    **BASE_ENV,
                    "VB_IDENTITY_SECRET": TEST_IDENTITY_SECRET.decode(),
                    "VB_CONVERSATION_DATABASE_URL": pg_url,
                    "VB_CONVERSATION_PORT": "0",
                    "VB_AGENTS_ADDRESS": f"127.0.0.1:{agents.port}",
                    "VB_BILLING_ADDRESS": f"127.0.0.1:{billing.port}",
                    "VB_RELAY_POLL_INTERVAL_MS": "50",
                }
            )
        )
        stack.push_async_callback(conversation.stop, 0)
        yield {"agents": agents.port, "billing": billing.port, "conversation": conversation.port}


@pytest.fixture(scope="module")
async def voice_port(pg_url, backends):
    running = await create_server(voice_settings(pg_url, backends))
    yield running.port
    await running.stop(0)


@pytest.fixture(scope="module")
async def stubs(backends, voice_port):
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        for port in (voice_port, backends["agents"], backends["conversation"], backends["billing"])
    ]
    yield (
        voice_service_pb2_grpc.VoiceServiceStub(channels[0]),
        agents_service_pb2_grpc.AgentServiceStub(channels[1]),
        conversation_service_pb2_grpc.ConversationServiceStub(channels[2]),
        billing_service_pb2_grpc.BillingServiceStub(channels[3]),
    )
    for channel in channels:
        await channel.close()


@pytest.fixture
def voice(stubs):
    return stubs[0]


@pytest.fixture
def conversation(stubs):
    return stubs[2]


@pytest.fixture
def billing(stubs):
    return stubs[3]


@pytest.fixture
def tenant() -> str:
    return new_id("ten")


@pytest.fixture
def md(as_tenant, tenant):
    return as_tenant(tenant)


@pytest.fixture
def new_session(stubs, md):
    """new_session(**agent fields) → (agent, session) of the test's tenant."""
    _, agents, conversation, _ = stubs

    async def create(metadata=None, **agent_fields):
        metadata = metadata or md
        fields = {
            "display_name": "Voice",
            "system_prompt": "You are brief.",
            "primary_provider": "vendorA",
            "fallback_provider": "vendorB",
            "voice": agent_pb2.VoiceSettings(voice="espeak/en-us", words_per_minute=300),
            **agent_fields,
        }
        agent = await agents.CreateAgent(
            agents_service_pb2.CreateAgentRequest(agent=agent_pb2.Agent(**fields)), metadata=metadata
        )
        session = await conversation.CreateSession(
            conversation_service_pb2.CreateSessionRequest(session=session_pb2.Session(agent=agent.name)),
            metadata=metadata,
        )
        return agent, session

    return create


@pytest.fixture(scope="module")
async def spoken(stubs, as_tenant):
    """spoken(text) → a WAV of `text` in Piper's voice (cached per module)."""
    voice = stubs[0]
    cache: dict[str, bytes] = {}
    metadata = as_tenant(new_id("ten"))

    async def speak(text: str) -> bytes:
        if text not in cache:
            response = await voice.Synthesize(
                voice_service_pb2.SynthesizeRequest(text=text, voice="piper/en_US-joe-medium"), metadata=metadata
            )
            cache[text] = response.audio.content
        return cache[text]

    return speak


def wav_frames(content: bytes) -> tuple[bytes, int]:
    with wave.open(io.BytesIO(content)) as reader:
        return reader.readframes(reader.getnframes()), reader.getframerate()


def with_key(md, key: str):
    return (*md, ("idempotency-key", key))
