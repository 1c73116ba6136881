"""Voice service settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.topology import default_address, default_port
from vocalbridge_voice.domain.audio import AudioLimits
from vocalbridge_voice.domain.endpointing import EndpointSettings
from vocalbridge_voice.engines.worker import STT_ENGINES, TTS_ENGINES, EngineSpec

# This service's name: its identity in calls it makes on its own behalf, its database schema,
# its configuration prefix (topology).
SERVICE = "voice"


@dataclass(frozen=True)
class RelaySettings:
    """The billing outbox relay of standalone Transcribe and Synthesize usage."""

    batch_size: int = 100
    poll_interval_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0


@dataclass(frozen=True)
class VoiceSettings:
    common: CommonSettings
    conversation_address: str
    agents_address: str
    billing_address: str
    engines: EngineSpec
    # The default engines; an agent picks its text-to-speech engine with its voice.
    stt_engine: str
    default_voice: str
    workers: int
    # Spoken turns (Converse, Transcribe, Synthesize) and streams in progress at once; more are
    # refused with RESOURCE_EXHAUSTED (VOICE_CAPACITY_EXHAUSTED) rather than queued.
    max_requests: int
    max_streams: int
    audio: AudioLimits
    # How far (seconds of audio) a stream's reply may run ahead of what the caller has heard.
    # The reply is taken from the model only as it is spoken, so a barge-in cuts it near
    # where the caller stopped listening.
    reply_lead_seconds: float
    # After this long a reply is no longer held back (the model's attempt must not time out
    # while the caller listens): a barge-in later than this finds the reply whole.
    reply_pacing_limit_seconds: float
    relay: RelaySettings

    @classmethod
    def from_env(cls, env: Env | None = None) -> VoiceSettings:
        env = env or Env()
        stt = env.list("VB_VOICE_STT_ENGINES", STT_ENGINES)
        tts = env.list("VB_VOICE_TTS_ENGINES", TTS_ENGINES)
        for name, engines, known in (
            ("VB_VOICE_STT_ENGINES", stt, STT_ENGINES),
            ("VB_VOICE_TTS_ENGINES", tts, TTS_ENGINES),
        ):
            unknown = [engine for engine in engines if engine not in known]
            if unknown or not engines:
                raise ConfigError(f"{name} must name one or more of {', '.join(known)} (got {', '.join(engines)})")
        stt_engine = env.str("VB_VOICE_STT_ENGINE", stt[0])
        if stt_engine not in stt:
            raise ConfigError(
                f"VB_VOICE_STT_ENGINE {stt_engine!r} is not among VB_VOICE_STT_ENGINES ({', '.join(stt)})"
            )
        default_voice = env.str(
            "VB_VOICE_DEFAULT_VOICE", "piper/en_US-joe-medium" if "piper" in tts else "espeak/en-us"
        )
        workers = env.int("VB_VOICE_WORKERS", min(4, os.cpu_count() or 1))
        positive = {
            "VB_VOICE_WORKERS": workers,
            "VB_VOICE_MAX_REQUESTS": env.int("VB_VOICE_MAX_REQUESTS", 8),
            "VB_VOICE_MAX_STREAMS": env.int("VB_VOICE_MAX_STREAMS", 8),
            "VB_VOICE_MAX_AUDIO_BYTES": env.int("VB_VOICE_MAX_AUDIO_BYTES", 10 * 1024 * 1024),
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1")
        endpointing = EndpointSettings(
            end_silence_seconds=env.float("VB_VOICE_END_OF_UTTERANCE_MS", 400) / 1000,
            max_utterance_seconds=env.float("VB_VOICE_MAX_UTTERANCE_SECONDS", 30),
        )
        return cls(
            common=CommonSettings.from_env(SERVICE, default_port(SERVICE), env),
            conversation_address=env.str("VB_CONVERSATION_ADDRESS", default_address("conversation")),
            agents_address=env.str("VB_AGENTS_ADDRESS", default_address("agents")),
            billing_address=env.str("VB_BILLING_ADDRESS", default_address("billing")),
            engines=EngineSpec(
                stt=stt,
                tts=tts,
                piper_voices=env.list("VB_VOICE_PIPER_VOICES", ("en_US-joe-medium",)),
                endpointing=endpointing,
            ),
            stt_engine=stt_engine,
            default_voice=default_voice,
            workers=workers,
            max_requests=positive["VB_VOICE_MAX_REQUESTS"],
            max_streams=positive["VB_VOICE_MAX_STREAMS"],
            audio=AudioLimits(
                max_bytes=positive["VB_VOICE_MAX_AUDIO_BYTES"],
                max_seconds=env.float("VB_VOICE_MAX_AUDIO_SECONDS", 60),
            ),
            reply_lead_seconds=env.float("VB_VOICE_REPLY_LEAD_SECONDS", 1.0),
            reply_pacing_limit_seconds=env.float("VB_VOICE_REPLY_PACING_LIMIT_SECONDS", 20),
            relay=RelaySettings(poll_interval_seconds=env.float("VB_RELAY_POLL_INTERVAL_MS", 500) / 1000),
        )
