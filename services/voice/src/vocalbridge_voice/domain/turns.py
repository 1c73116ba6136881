"""A spoken turn: what it must be given, and where its time went."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vocalbridge_common.errors import FieldViolation, InvalidArgument

SESSION_NAME = re.compile(r"^sessions/[A-Za-z0-9_-]{1,64}$")


class NoSpeech(InvalidArgument):
    default_reason = "NO_SPEECH_RECOGNIZED"

    def __init__(self, field: str = "audio.content") -> None:
        message = "no speech was recognized in the audio"
        super().__init__(message, field_violations=[FieldViolation(field, message)])


class UtteranceTooLong(InvalidArgument):
    default_reason = "UTTERANCE_TOO_LONG"

    def __init__(self, seconds: float) -> None:
        message = f"the caller spoke for more than {seconds:g} seconds without a pause; nothing was sent"
        super().__init__(message, field_violations=[FieldViolation("audio", message)])


def validate_session_name(name: str, field: str = "session") -> str:
    if not SESSION_NAME.match(name):
        raise InvalidArgument(
            f"{field} must be `sessions/{{session_id}}`",
            reason="INVALID_ARGUMENT",
            field_violations=[FieldViolation(field, "must be `sessions/{session_id}`")],
        )
    return name


@dataclass(frozen=True)
class Latency:
    """Seconds from having the caller's whole utterance; None for a step that did not happen."""

    speech_recognized: float
    first_reply_token: float | None = None
    first_reply_audio: float | None = None
    total: float | None = None
