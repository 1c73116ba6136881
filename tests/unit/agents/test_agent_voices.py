"""An agent's voice checked against the installed voices when it is saved: the domain check,
the cached list the voice service publishes, and the use cases refusing before any write."""

from __future__ import annotations

import grpc
import pytest

from vocalbridge.voice.v1 import voice_service_pb2 as voice_pb
from vocalbridge_agents.domain import AgentConfig, VoiceSettings, validate_config
from vocalbridge_agents.server import MIGRATIONS_DIR, SCHEMA
from vocalbridge_agents.service import AgentService
from vocalbridge_agents.voices_client import InstalledVoices, catalogue_from_proto
from vocalbridge_common.db import Database
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.ids import new_id
from vocalbridge_common.migrations import migrate
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_common.voices import VoiceCatalogue

LISTED = voice_pb.ListVoicesResponse(
    voices=[
        voice_pb.Voice(name="piper/en_US-joe-medium", engine="piper", language="en-us"),
        voice_pb.Voice(name="espeak/en-us", engine="espeak", language="en-us", variants=["f3", "m1"]),
        voice_pb.Voice(name="espeak/de", engine="espeak", language="de", variants=["f3", "m1"]),
    ],
    default_voice="piper/en_US-joe-medium",
)
PROVIDERS = ("vendorA", "vendorB")


def catalogue() -> VoiceCatalogue:
    return catalogue_from_proto(LISTED)


def voice_violations(voice: str, wpm: int = 0, voices: VoiceCatalogue | None = None) -> dict[str, str]:
    config = AgentConfig(
        display_name="Talker", primary_provider="vendorA", voice=VoiceSettings(voice=voice, words_per_minute=wpm)
    )
    found = validate_config(config, known_providers=PROVIDERS, max_system_prompt_chars=100, voices=voices)
    return {v.field: v.description for v in found}


def test_the_listed_voices_become_a_catalogue_in_the_listed_order():
    found = catalogue()
    assert found.engines == ("piper", "espeak")
    assert [v.qualified_name for v in found.voices] == ["piper/en_US-joe-medium", "espeak/en-us", "espeak/de"]
    assert found.variants == {"piper": frozenset(), "espeak": frozenset({"f3", "m1"})}
    assert found.default_voice == "piper/en_US-joe-medium"


@pytest.mark.parametrize("voice", ["", "piper/en_US-joe-medium", "espeak/en-us", "espeak/de+f3", "en-us", "de"])
def test_an_installed_voice_is_accepted(voice):
    assert voice_violations(voice, 200, catalogue()) == {}


@pytest.mark.parametrize(
    ("voice", "expected"),
    [
        ("piper/en_GB-alan-low", "is not installed (for example: piper/en_US-joe-medium, espeak/en-us"),
        ("klingon", "is not installed (for example: piper/en_US-joe-medium"),
        ("festival/kal", "engine 'festival' is not enabled here (enabled: piper, espeak)"),
        ("espeak/en-us+x9", "variant 'x9' is not installed for espeak"),
    ],
)
def test_a_voice_that_is_not_installed_is_a_field_violation_naming_installed_ones(voice, expected):
    violations = voice_violations(voice, 0, catalogue())
    assert list(violations) == ["agent.voice.voice"]
    assert expected in violations["agent.voice.voice"]


def test_without_a_list_only_the_form_is_checked():
    assert voice_violations("piper/en_GB-alan-low") == {}
    assert list(voice_violations("no spaces allowed", 0, catalogue())) == ["agent.voice.voice"]
    # The rate is checked once, whether or not there is a list.
    assert list(voice_violations("espeak/en-us", 20, catalogue())) == ["agent.voice.words_per_minute"]
    assert list(voice_violations("espeak/en-us", 20)) == ["agent.voice.words_per_minute"]


class FakeVoiceService:
    """ListVoices as the client sees it: the list, or a failure, counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    async def fetch(self) -> VoiceCatalogue:
        self.calls += 1
        if self.down:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return catalogue()


async def test_the_list_is_kept_for_a_while_then_fetched_again():
    service, now = FakeVoiceService(), [100.0]
    voices = InstalledVoices(service.fetch, cache_seconds=30, clock=lambda: now[0])
    assert await voices.catalogue() == catalogue()
    now[0] += 29
    assert await voices.catalogue() == catalogue()
    assert service.calls == 1
    now[0] += 2
    assert await voices.catalogue() == catalogue()
    assert service.calls == 2


async def test_an_unreachable_voice_service_means_no_list_logged_once_and_retried(caplog):
    service, now = FakeVoiceService(), [100.0]
    voices = InstalledVoices(service.fetch, cache_seconds=30, clock=lambda: now[0])
    assert await voices.catalogue() is not None
    now[0] += 31
    service.down = True
    with caplog.at_level("WARNING", logger="vocalbridge_agents.voices_client"):
        assert await voices.catalogue() is None  # not the stale list
        assert await voices.catalogue() is None  # not asked again at once
        now[0] += 6
        assert await voices.catalogue() is None
    assert service.calls == 3
    assert len([r for r in caplog.records if "UNAVAILABLE" in r.getMessage()]) == 1
    service.down = False
    now[0] += 6
    assert await voices.catalogue() == catalogue()


async def test_no_voice_service_configured_means_no_list():
    assert await InstalledVoices(None).catalogue() is None


@pytest.fixture
async def agents(tmp_path):
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    db = Database(url, SCHEMA)
    service = AgentService(
        db,
        Paginator(PageTokenCodec(b"s" * 32)),
        known_providers=PROVIDERS,
        max_system_prompt_chars=100,
        voices=InstalledVoices(FakeVoiceService().fetch),
    )
    try:
        yield service
    finally:
        await db.dispose()


async def test_create_and_update_refuse_an_uninstalled_voice_before_any_write(agents):
    tenant = new_id("ten")
    with pytest.raises(InvalidArgument) as refused:
        await agents.create_agent(
            tenant, AgentConfig(display_name="A", primary_provider="vendorA", voice=VoiceSettings("piper/nope"))
        )
    assert [v.field for v in refused.value.field_violations] == ["agent.voice.voice"]
    assert (await agents.list_agents(tenant, 0, "")).items == []

    agent = await agents.create_agent(
        tenant, AgentConfig(display_name="A", primary_provider="vendorA", voice=VoiceSettings("espeak/de+f3", 200))
    )
    with pytest.raises(InvalidArgument) as refused:
        await agents.update_agent(
            tenant,
            agent.name,
            AgentConfig(voice=VoiceSettings("espeak/xx")),
            mask_paths=["voice.voice"],
            populated_paths=frozenset(),
            etag="",
        )
    assert [v.field for v in refused.value.field_violations] == ["agent.voice.voice"]
    assert await agents.get_agent(tenant, agent.name) == agent  # no new version

    updated = await agents.update_agent(
        tenant,
        agent.name,
        AgentConfig(voice=VoiceSettings("en-us")),
        mask_paths=["voice.voice"],
        populated_paths=frozenset(),
        etag="",
    )
    assert updated.version == 2 and updated.config.voice == VoiceSettings("en-us", 200)
