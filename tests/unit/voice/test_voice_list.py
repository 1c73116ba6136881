"""ListVoices: the catalogue in pages, and read back by the agents service as the same catalogue."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from vocalbridge_agents.voices_client import catalogue_from_proto
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.pagination import PageTokenCodec, Paginator
from vocalbridge_voice import presenters
from vocalbridge_voice.domain.voices import VoiceCatalogue, VoiceInfo
from vocalbridge_voice.service.voices import VoiceListService

CATALOGUE = VoiceCatalogue(
    engines=("piper", "espeak"),
    voices=(
        VoiceInfo("piper", "en_US-joe-medium", "en-us"),
        VoiceInfo("espeak", "en-us", "en-us"),
        VoiceInfo("espeak", "de", "de"),
    ),
    default_voice="piper/en_US-joe-medium",
    variants={"piper": frozenset(), "espeak": frozenset({"m1", "f3"})},
)


def service() -> VoiceListService:
    speech = cast(Any, SimpleNamespace(catalogue=CATALOGUE))
    return VoiceListService(speech, Paginator(PageTokenCodec(b"k" * 32)))


def test_every_voice_page_by_page_and_read_back_as_the_same_catalogue():
    names, token, pages = [], "", 0
    combined = None
    while True:
        response = presenters.voices_response(service().list_voices(2, token))
        pages += 1
        names += [voice.name for voice in response.voices]
        if combined is None:
            combined = response
        else:
            combined.voices.extend(response.voices)
        token = response.next_page_token
        if not token:
            break
    assert pages == 2
    assert names == ["piper/en_US-joe-medium", "espeak/en-us", "espeak/de"]
    assert list(combined.voices[1].variants) == ["f3", "m1"]
    assert combined.default_voice == "piper/en_US-joe-medium"
    assert catalogue_from_proto(combined) == CATALOGUE


def test_a_forged_page_token_is_refused():
    with pytest.raises(InvalidArgument):
        service().list_voices(2, "not-a-token")
