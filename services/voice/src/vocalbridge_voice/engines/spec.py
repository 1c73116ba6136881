"""What the speech workers load: engine names, worker roles and the spec a worker starts
from. Apart from the workers themselves (engines/worker.py), so that the service process
learns them without importing the engines' numerical libraries."""

from __future__ import annotations

from dataclasses import dataclass, field

from vocalbridge_voice.domain.endpointing import EndpointSettings

STT_ENGINES = ("pocketsphinx", "whisper")
TTS_ENGINES = ("piper", "espeak")
# What a worker does: recognize speech (transcription, streams) or speak.
STT = "stt"
TTS = "tts"
ROLES = (STT, TTS)


@dataclass(frozen=True)
class EngineSpec:
    """The engines the workers load, each worker those of its role (from the service's settings)."""

    stt: tuple[str, ...]
    tts: tuple[str, ...]
    piper_voices: tuple[str, ...] = ("en_US-joe-medium",)
    endpointing: EndpointSettings = field(default_factory=EndpointSettings)
    # A worker idle this long after some work gives back memory it kept for busy times.
    idle_tidy_seconds: float = 30.0
