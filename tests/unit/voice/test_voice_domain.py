"""The voice domain's pure rules: audio validation, voice resolution, cutting a reply into
pieces to speak, and finding utterances in a stream of speech probabilities."""

from __future__ import annotations

import io
import wave

import pytest

from vocalbridge_common.errors import FailedPrecondition, InvalidArgument
from vocalbridge_voice.domain.audio import AudioLimits, InvalidAudio, Pcm, parse_wav, to_wav
from vocalbridge_voice.domain.endpointing import Endpointer, EndpointEvent, EndpointSettings
from vocalbridge_voice.domain.text import SentenceSplitter
from vocalbridge_voice.domain.voices import VoiceCatalogue, VoiceInfo
from vocalbridge_voice.engines.resample import downmix_stereo

LIMITS = AudioLimits(max_bytes=1_000_000, max_seconds=2.0)


def wav(samples: bytes, rate: int = 16000, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(samples)
    return buffer.getvalue()


def test_a_wav_round_trips_and_stereo_is_mixed_to_mono():
    pcm = parse_wav(wav(b"\x10\x00\x20\x00" * 100, rate=22050), LIMITS)
    assert (pcm.sample_rate, pcm.frames) == (22050, 200)
    assert parse_wav(to_wav(pcm), LIMITS) == pcm
    stereo = parse_wav(wav(b"\x10\x00\x30\x00" * 100, channels=2), LIMITS)
    assert (stereo.channels, stereo.frames, stereo.seconds) == (2, 100, 100 / 16000)
    assert parse_wav(to_wav(stereo), LIMITS) == stereo
    # The speech workers mix it down before recognition.
    assert downmix_stereo(stereo.samples) == b"\x20\x00" * 100


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "AUDIO_EMPTY"),
        (b"x" * 1_000_001, "AUDIO_TOO_LARGE"),
        (b"OggS not a wav", "AUDIO_NOT_WAV"),
        (b"RIFF\x00\x00\x00\x00WAVEjunk", "AUDIO_NOT_WAV"),
        (wav(b"\0" * 100, width=1), "AUDIO_SAMPLE_WIDTH_UNSUPPORTED"),
        (wav(b"\0" * 300, width=3), "AUDIO_SAMPLE_WIDTH_UNSUPPORTED"),
        (wav(b"\0\0" * 100, rate=9000), "AUDIO_SAMPLE_RATE_UNSUPPORTED"),
        (wav(b"\0\0" * 16000 * 3), "AUDIO_TOO_LONG"),
        (wav(b""), "AUDIO_EMPTY"),
    ],
)
def test_unusable_audio_is_refused_with_its_reason(content, reason):
    with pytest.raises(InvalidAudio) as caught:
        parse_wav(content, LIMITS)
    assert caught.value.reason == reason
    assert [v.field for v in caught.value.field_violations] == ["audio.content"]


CATALOGUE = VoiceCatalogue(
    engines=("piper", "espeak"),
    voices=(
        VoiceInfo("piper", "en_US-joe-medium", "en-us"),
        VoiceInfo("espeak", "en-us", "en-us"),
        VoiceInfo("espeak", "fr-fr", "fr-fr"),
    ),
    default_voice="piper/en_US-joe-medium",
    variants={"espeak": frozenset({"f3", "m1"})},
)


def test_voices_resolve_by_qualified_or_bare_name_with_variants():
    assert CATALOGUE.resolve("", 0).qualified_name == "piper/en_US-joe-medium"
    assert CATALOGUE.resolve("", 0).words_per_minute == 175
    assert CATALOGUE.resolve("en-us", 200).qualified_name == "espeak/en-us"
    assert CATALOGUE.resolve("espeak/en-us+f3", 0).voice == "en-us+f3"


@pytest.mark.parametrize(
    ("voice", "wpm", "fields"),
    [
        ("klingon", 0, {"voice"}),
        ("piper/en-us", 0, {"voice"}),  # espeak has it, piper does not
        ("whisper/en-us", 0, {"voice"}),  # not a text-to-speech engine here
        ("espeak/en-us+nobody", 0, {"voice"}),
        ("en-us", 79, {"words_per_minute"}),
        ("x" * 51, 451, {"voice", "words_per_minute"}),
    ],
)
def test_voices_that_are_not_installed_are_field_violations(voice, wpm, fields):
    with pytest.raises(InvalidArgument) as caught:
        CATALOGUE.resolve(voice, wpm)
    assert {v.field for v in caught.value.field_violations} == fields


def test_an_agents_voice_that_is_not_installed_is_a_failed_precondition_naming_its_fields():
    with pytest.raises(FailedPrecondition) as caught:
        CATALOGUE.resolve_agent_voice("agents/agt_1", "en_GB-alan-low", 0)
    assert caught.value.reason == "AGENT_VOICE_NOT_INSTALLED"
    assert [v.field for v in caught.value.field_violations] == ["agent.voice.voice"]


def test_a_streamed_reply_is_cut_into_sentences_and_long_clauses_and_joins_back():
    splitter = SentenceSplitter()
    text = '[vendorA] Turn 1. You said: "hi". Well, this clause is long enough to be spoken alone, I think; yes! End'
    pieces = []
    for i in range(0, len(text), 3):
        pieces += splitter.feed(text[i : i + 3])
    pieces += splitter.flush()
    assert "".join(pieces) == text
    assert pieces[0] == "[vendorA] Turn 1. "
    assert pieces[-1] == "End"
    # A clause is spoken alone once the piece is long enough, not before.
    assert pieces[2] == "Well, this clause is long enough to be spoken alone, "
    assert pieces[3] == "I think; yes! "


def _events(probabilities, **settings):
    endpointer = Endpointer(EndpointSettings(frame_seconds=0.1, start_seconds=0.2, end_silence_seconds=0.3, **settings))
    return [(i, e) for i, p in enumerate(probabilities) if (e := endpointer.push(p)) is not None], endpointer


def test_an_utterance_starts_after_sustained_speech_and_ends_after_sustained_silence():
    events, endpointer = _events([0.1, 0.9, 0.2, 0.9, 0.9, 0.9, 0.4, 0.2, 0.2, 0.9, 0.1, 0.1, 0.1])
    assert events == [(4, EndpointEvent.SPEECH_STARTED), (12, EndpointEvent.SPEECH_ENDED)]
    assert endpointer.utterance_start == 3


def test_an_utterance_without_a_pause_is_cut_off_as_too_long():
    events, _ = _events([0.9] * 30, max_utterance_seconds=1.0)
    assert [e for _, e in events][:3] == [
        EndpointEvent.SPEECH_STARTED,
        EndpointEvent.TOO_LONG,
        EndpointEvent.SPEECH_STARTED,
    ]


def test_silence_is_never_an_utterance():
    events, _ = _events([0.0, 0.49, 0.3] * 20)
    assert events == []


def test_pcm_knows_its_length():
    assert Pcm(b"\0\0" * 8000, 16000).seconds == 0.5


def test_the_service_process_does_not_load_numpy():
    """numpy (about 20 MB resident) is the speech workers' business: the service process only
    parses WAV headers and passes samples on."""
    import subprocess
    import sys

    code = "import sys, vocalbridge_voice.server; print('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
