"""Voice service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from vocalbridge_common.config import CommonSettings, ConfigError, Env
from vocalbridge_common.idempotency import IdempotencySettings
from vocalbridge_common.limits.config import LimitSettings
from vocalbridge_common.outbox import RelaySettings
from vocalbridge_common.retention import RetentionSettings
from vocalbridge_common.topology import default_address, default_port
from vocalbridge_voice.domain.audio import AudioLimits
from vocalbridge_voice.domain.endpointing import EndpointSettings
from vocalbridge_voice.engines.spec import STT, STT_ENGINES, TTS, TTS_ENGINES, EngineSpec

# This service's name: its identity in calls it makes on its own behalf, its database schema,
# its configuration prefix (topology).
SERVICE = "voice"


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
    # Speech worker processes per role (STT: recognizer and voice activity detector; TTS: the
    # voices): each loads only its role's models.
    workers: dict[str, int]
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
    keys: IdempotencySettings
    # Budgets of Transcribe and Synthesize: the counters (Redis) and the failure modes.
    limits: LimitSettings = field(default_factory=LimitSettings)
    # Auth, which says what each tenant's budgets are; None: none are enforced (from_env sets it).
    auth_address: str | None = None
    # How long expired idempotency keys and delivered outbox rows are kept (VB_RETENTION_*).
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @classmethod
    def from_env(cls, env: Env | None = None) -> VoiceSettings:
        env = env or Env()
        # Only the recognizer in use is loaded (Whisper only when chosen): the service transcribes
        # with one engine, so another one loaded would only hold memory.
        chosen = env.optional("VB_VOICE_STT_ENGINE")
        stt = env.list("VB_VOICE_STT_ENGINES", (chosen or STT_ENGINES[0],))
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
        # One worker of each role by default: recognition and speech run side by side, each
        # model held once. (VB_VOICE_WORKERS is the stack runner's: service processes.)
        positive = {
            "VB_VOICE_STT_WORKERS": env.int("VB_VOICE_STT_WORKERS", 1),
            "VB_VOICE_TTS_WORKERS": env.int("VB_VOICE_TTS_WORKERS", 1),
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
            auth_address=env.str("VB_AUTH_ADDRESS", default_address("auth")),
            limits=LimitSettings.from_env(env),
            engines=EngineSpec(
                stt=stt,
                tts=tts,
                piper_voices=env.list("VB_VOICE_PIPER_VOICES", ("en_US-joe-medium",)),
                endpointing=endpointing,
            ),
            stt_engine=stt_engine,
            default_voice=default_voice,
            workers={STT: positive["VB_VOICE_STT_WORKERS"], TTS: positive["VB_VOICE_TTS_WORKERS"]},
            max_requests=positive["VB_VOICE_MAX_REQUESTS"],
            max_streams=positive["VB_VOICE_MAX_STREAMS"],
            audio=AudioLimits(
                max_bytes=positive["VB_VOICE_MAX_AUDIO_BYTES"],
                max_seconds=env.float("VB_VOICE_MAX_AUDIO_SECONDS", 60),
            ),
            reply_lead_seconds=env.float("VB_VOICE_REPLY_LEAD_SECONDS", 1.0),
            reply_pacing_limit_seconds=env.float("VB_VOICE_REPLY_PACING_LIMIT_SECONDS", 20),
            relay=RelaySettings.from_env(env),
            keys=IdempotencySettings.from_env(env),
            retention=RetentionSettings.from_env(env),
        )
