"""Sessions and messages: values, resource names and the rules for a new session."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from vocalbridge_common.errors import AgentNotFound, FieldViolation, InvalidArgument, SessionNotFound, invalid_fields
from vocalbridge_common.ids import parse_resource_name
from vocalbridge_common.validation import Violations
from vocalbridge_common.vocabulary import Channel

SESSION_ID_PREFIX = "ses"
MESSAGE_ID_PREFIX = "msg"
AGENT_ID_PREFIX = "agt"
# A session created without a channel is a text session.
DEFAULT_CHANNEL = Channel.TEXT

MAX_EXTERNAL_USER_ID_CHARS = 200
MAX_METADATA_ENTRIES = 32
METADATA_KEY_CHARS = (1, 64)
MAX_METADATA_VALUE_CHARS = 512


class Role(enum.IntEnum):
    """Who wrote a message. The number is what the messages table stores."""

    USER = 1
    ASSISTANT = 2


class MessageStatus(enum.IntEnum):
    """What became of a message. The number is what the messages table stores."""

    COMPLETE = 1
    # The user's message of a turn no provider could answer.
    FAILED = 2
    # A reply cut short: by the provider's output limit, or by the caller leaving mid-stream.
    TRUNCATED = 3


# The messages a provider sees as the conversation so far.
HISTORY_STATUSES = (MessageStatus.COMPLETE, MessageStatus.TRUNCATED)


def session_name(session_id: str) -> str:
    return f"sessions/{session_id}"


def message_name(session_id: str, message_id: str) -> str:
    return f"sessions/{session_id}/messages/{message_id}"


def agent_name(agent_id: str) -> str:
    return f"agents/{agent_id}"


def session_id_of(name: str) -> str | None:
    """The session id of `sessions/{session_id}`, None when `name` cannot be a session's."""
    return parse_resource_name(name, "sessions", SESSION_ID_PREFIX)


def parse_session_name(name: str) -> str:
    """The session id of `sessions/{session_id}`; a name that cannot be a session's is not found."""
    session_id = session_id_of(name)
    if session_id is None:
        raise SessionNotFound(name)
    return session_id


def agent_id_of(name: str) -> str | None:
    """The agent id of `agents/{agent_id}`, None when `name` cannot be an agent's."""
    return parse_resource_name(name, "agents", AGENT_ID_PREFIX)


def parse_agent_filter(agent: str) -> str | None:
    """The agent id of a list filter (`agents/{agent_id}`), None for no filter."""
    if not agent:
        return None
    agent_id = agent_id_of(agent)
    if agent_id is None:
        raise InvalidArgument(
            "agent must be `agents/{agent_id}`", field_violations=[FieldViolation("agent", "not an agent name")]
        )
    return agent_id


@dataclass(frozen=True)
class NewSession:
    """What a caller asks for when creating a session. `channel` is None when the caller
    named a channel this version does not know."""

    agent: str
    channel: Channel | None = DEFAULT_CHANNEL
    external_user_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Session:
    id: str
    agent_id: str
    agent_version: int
    channel: Channel
    external_user_id: str
    metadata: Mapping[str, str]
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return session_name(self.id)

    @property
    def agent(self) -> str:
        return agent_name(self.agent_id)


@dataclass(frozen=True)
class SessionState:
    """What a turn needs of its session: the agent version it is pinned to, and the number
    of its newest message (messages are numbered in the order their turns committed)."""

    id: str
    agent_id: str
    agent_version: int
    last_seq: int


@dataclass(frozen=True)
class Message:
    id: str
    session_id: str
    role: Role
    content: str
    status: MessageStatus
    channel: Channel
    create_time: datetime

    @property
    def name(self) -> str:
        return message_name(self.session_id, self.id)


def validate_new_session(new: NewSession) -> tuple[str, Channel]:
    """The agent id and the channel of `new`, once every field is valid (all violations at once)."""
    violations = Violations()
    agent_id = None
    if not new.agent:
        violations.add("session.agent", "is required, as `agents/{agent_id}`")
    else:
        agent_id = agent_id_of(new.agent)
    violations.length("session.external_user_id", new.external_user_id, maximum=MAX_EXTERNAL_USER_ID_CHARS)
    if len(new.metadata) > MAX_METADATA_ENTRIES:
        violations.add("session.metadata", f"at most {MAX_METADATA_ENTRIES} entries")
    low, high = METADATA_KEY_CHARS
    for key, value in new.metadata.items():
        if not low <= len(key) <= high:
            violations.add(f"session.metadata[{key[:high]}]", f"keys must be {low} to {high} characters")
        if len(value) > MAX_METADATA_VALUE_CHARS:
            violations.add(
                f"session.metadata[{key[:high]}]", f"values must be at most {MAX_METADATA_VALUE_CHARS} characters"
            )
    if new.channel is None:
        violations.add("session.channel", "must be CHANNEL_TEXT or CHANNEL_VOICE")
    if violations or new.channel is None:
        raise invalid_fields(violations)
    if agent_id is None:
        # A name that cannot be an agent's: like another tenant's agent, it does not exist.
        raise AgentNotFound(new.agent)
    return agent_id, new.channel
