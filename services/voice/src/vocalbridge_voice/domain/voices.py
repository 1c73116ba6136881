"""The installed voices: the catalogue lives in vocalbridge_common.voices, shared with the
agents service, which checks an agent's voice against the list this service publishes."""

from vocalbridge_common.voices import (
    DEFAULT_WORDS_PER_MINUTE,
    MAX_VOICE_NAME,
    MAX_WORDS_PER_MINUTE,
    MIN_WORDS_PER_MINUTE,
    VoiceCatalogue,
    VoiceChoice,
    VoiceInfo,
)

__all__ = [
    "DEFAULT_WORDS_PER_MINUTE",
    "MAX_VOICE_NAME",
    "MAX_WORDS_PER_MINUTE",
    "MIN_WORDS_PER_MINUTE",
    "VoiceCatalogue",
    "VoiceChoice",
    "VoiceInfo",
]
