"""One turn: what the caller asks, what the agent version brings, what the turn produced,
and why a turn fails."""

from __future__ import annotations

from dataclasses import dataclass

from vocalbridge_common.errors import FieldViolation, InvalidArgument, Unavailable, invalid_fields
from vocalbridge_common.validation import Violations
from vocalbridge_conversation.delivery import DeliveryResult, Delta, Restart
from vocalbridge_conversation.domain.sessions import Message
from vocalbridge_conversation.domain.usage import TurnUsage
from vocalbridge_conversation.providers.base import ChatMessage

MAX_AUDIO_SECONDS = 3600


@dataclass(frozen=True)
class AgentConfig:
    """What a turn needs of an agent version."""

    agent_id: str
    version: int
    system_prompt: str
    primary_provider: str
    fallback_provider: str | None
    model: str
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None


@dataclass(frozen=True)
class VoiceInput:
    """The speech side of a spoken turn (set by the voice service)."""

    audio_seconds: float
    speech_provider: str


@dataclass(frozen=True)
class Overrides:
    """Request parameters that replace the agent's for one turn (the OpenAI-compatible API's
    `temperature`, `top_p`, `max_tokens`, `stop` and `user`), checked against the agent's
    bounds once the agent is known (prompt.apply_overrides). None / empty: the agent's."""

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop: tuple[str, ...] = ()
    user: str | None = None

    def __bool__(self) -> bool:
        return self != Overrides()

    def fingerprint(self) -> dict[str, object]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "stop": list(self.stop),
            "user": self.user,
        }


@dataclass(frozen=True)
class TurnRequest:
    """A turn as the caller asked for it, before anything is checked. `overrides` and
    `agent_id` come from the OpenAI-compatible API's session mode: its parameters, and the
    agent (its `model`) the session must be pinned to."""

    session_name: str
    content: str
    idempotency_key: str | None
    voice: VoiceInput | None = None
    overrides: Overrides = Overrides()
    agent_id: str | None = None


@dataclass(frozen=True)
class CompletionTurn:
    """A turn outside any session (the OpenAI-compatible API without a session): the
    conversation is the caller's, sent whole, after the agent's system prompt; the agent's
    current version answers it. Nothing is stored but its usage event (and, with an
    idempotency key, the response a retry gets)."""

    agent_id: str
    messages: tuple[ChatMessage, ...]
    idempotency_key: str | None
    overrides: Overrides = Overrides()

    def fingerprint_fields(self) -> dict[str, object]:
        """What makes two completions the same request under one idempotency key."""
        return {
            "agent": self.agent_id,
            "messages": [[message.role, message.content] for message in self.messages],
            "overrides": self.overrides.fingerprint(),
        }


def validate_turn(turn: TurnRequest, max_content_chars: int) -> None:
    violations = Violations()
    if not turn.content.strip():
        violations.add("content", "is required and must not be blank")
    elif len(turn.content) > max_content_chars:
        violations.add("content", f"must be at most {max_content_chars} characters (got {len(turn.content)})")
    if turn.voice is not None and not 0 < turn.voice.audio_seconds <= MAX_AUDIO_SECONDS:
        violations.add("voice.audio_seconds", f"must be greater than 0 and at most {MAX_AUDIO_SECONDS}")
    if violations:
        raise invalid_fields(violations)


def fingerprint_fields(session_id: str, turn: TurnRequest) -> dict[str, object]:
    """What makes two turns the same request under one idempotency key. Changing these
    changes every stored fingerprint: a client's retry across the change would be refused."""
    voice = (
        {"audio_seconds": turn.voice.audio_seconds, "speech_provider": turn.voice.speech_provider}
        if turn.voice
        else None
    )
    fields: dict[str, object] = {"session": session_id, "content": turn.content, "voice": voice}
    if turn.overrides:  # only the OpenAI-compatible API sets them: SendMessage's fingerprints stay as they were
        fields["overrides"] = turn.overrides.fingerprint()
    return fields


@dataclass(frozen=True)
class CompletedTurn:
    """A stored turn: the caller's message, the reply, how it was delivered and what it cost;
    once stored, also the response as stored for replays (encoded: what the caller is sent)."""

    user_message: Message
    assistant_message: Message
    delivery: DeliveryResult
    usage: TurnUsage
    stored_response: bytes = b""


# What a streamed turn produces: reply text, "discard the text so far" (another attempt
# starts), and finally the stored turn.
TurnEvent = Delta | Restart | CompletedTurn


# -- a spoken turn: the reply is kept as the caller heard it -------------------------------


@dataclass(frozen=True)
class ReplyGenerated:
    """The reply of a spoken turn is whole: `characters` long since its last restart."""

    characters: int


@dataclass(frozen=True)
class Playback:
    """What the caller heard of a spoken reply: all of it, or (interrupted) its first
    `spoken_characters` characters as they stood after `restarts` restarts."""

    interrupted: bool
    spoken_characters: int = 0
    restarts: int = 0


# A spoken turn's events: reply text, restarts, "the reply is whole", the stored turn.
VoiceTurnEvent = Delta | Restart | ReplyGenerated | CompletedTurn


def heard_reply(reply: str, restarts: int, playback: Playback, generated: bool) -> str | None:
    """The part of `reply` (the text since its `restarts`-th restart) the caller heard: None
    for all of it, else the text to keep. A count beyond what was sent, a restart count from
    the future, or "heard all" before the reply was whole is a caller's mistake."""
    if not playback.interrupted:
        if not generated:
            raise _playback_error("interrupted", "must be true until the reply is generated")
        return None
    if playback.restarts > restarts:
        raise _playback_error("restarts", f"only {restarts} restarts were sent")
    if playback.restarts < restarts:
        return ""  # the caller heard none of the reply as it now stands
    if not 0 <= playback.spoken_characters <= len(reply):
        raise _playback_error("spoken_characters", f"must be between 0 and the {len(reply)} characters sent")
    return reply[: playback.spoken_characters]


def _playback_error(field: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"playback.{field} {problem}",
        reason="INVALID_PLAYBACK",
        field_violations=[FieldViolation(f"playback.{field}", problem)],
    )


class ProvidersExhausted(Unavailable):
    """No provider could answer the turn; `delivery` records every attempt."""

    default_reason = "PROVIDERS_EXHAUSTED"

    def __init__(self, delivery: DeliveryResult) -> None:
        last = delivery.final_outcome.value if delivery.final_outcome else "NONE"
        super().__init__(
            "no provider could answer this turn; the attempts are in the error details",
            metadata={"lastOutcome": last, "attempts": str(len(delivery.attempts))},
        )
        self.delivery = delivery
