"""An OpenAI chat completion request (the OpenAI-compatible API), read from its raw JSON body
and checked whole before anything runs: no provider call, no write, no bill for a bad one.

Everything OpenAI's request may hold is either supported, or accepted only at the value that
means "off" (`n: 1`), or refused with 400 `UNSUPPORTED_PARAMETER` naming it: a caller never
gets a reply that silently ignored what it asked for. Every problem is reported at once, each
a field violation named as OpenAI names the parameter (`messages[2].content`), the first of
them being the error's `param`.

Text that reaches a provider (or, in a session, the database) must be valid UTF-8 without NUL:
JSON's `\\ud800` escapes can spell lone surrogates, which no UTF-8 encoder accepts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vocalbridge_common.errors import AgentNotFound, FieldViolation, InvalidArgument
from vocalbridge_common.json_limits import JsonTooDeep, loads_bounded
from vocalbridge_common.validation import MAX_LONG_TEXT_CHARS, Violations, text_problem
from vocalbridge_conversation.domain.sessions import agent_id_of
from vocalbridge_conversation.domain.turns import Overrides
from vocalbridge_conversation.providers.base import ChatMessage, Role

MAX_MESSAGES = 1000
MAX_STOP_SEQUENCES = 4  # as OpenAI
MAX_STOP_CHARS = 256
MAX_USER_CHARS = 200  # a session's external user id has the same bound
MAX_MODEL_CHARS = 256
TEMPERATURE_RANGE = (0.0, 2.0)

# Roles a caller may send, and what a provider is sent for each ("developer" is OpenAI's newer
# name for system instructions).
_ROLES: Mapping[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Parameters accepted only at the value that changes nothing.
_ONLY = {"n": 1}
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "user",
        "stream",
        "stream_options",
        *_ONLY,
    }
)
_MESSAGE_FIELDS = frozenset({"role", "content"})


class UnsupportedParameter(InvalidArgument):
    """A parameter of OpenAI's request this gateway does not implement (or an unknown one)."""

    default_reason = "UNSUPPORTED_PARAMETER"


@dataclass(frozen=True)
class ChatRequest:
    """A valid chat completion request. `agent_id` is None when `model` cannot name an agent
    (it is then not found, like another tenant's agent)."""

    model: str
    agent_id: str | None
    messages: tuple[ChatMessage, ...]
    overrides: Overrides
    stream: bool = False
    include_usage: bool = False

    def agent(self) -> str:
        """The agent id `model` names; AgentNotFound when it names none."""
        if self.agent_id is None:
            raise AgentNotFound(self.model)
        return self.agent_id

    def session_content(self) -> str:
        """The new user message of a turn in a server-side session: the only message sent."""
        if len(self.messages) != 1 or self.messages[0].role != "user":
            raise InvalidArgument(
                "with a VocalBridge-Session the session keeps the history: send only the new user message",
                reason="SESSION_TURN_MESSAGES",
                field_violations=[FieldViolation("messages", "must be exactly one message, with role 'user'")],
            )
        return self.messages[0].content


@dataclass(frozen=True)
class Model:
    """A model of the OpenAI-compatible API: an agent of the caller's tenant."""

    id: str  # the agent's resource name, `agents/{agent_id}`
    display_name: str
    create_time: datetime


def model_agent_id(model: str) -> str | None:
    """The agent id of a model name: `agents/{agent_id}` or the bare `agt_…` id."""
    return agent_id_of(model if model.startswith("agents/") else f"agents/{model}")


def parse_chat_request(body: bytes) -> ChatRequest:
    """The request in `body` (OpenAI's JSON); InvalidArgument naming every problem."""
    document = _json_object(body)
    violations = Violations()
    unsupported = Violations()
    for name in document:
        if name not in _KNOWN:
            unsupported.add(name, f"'{_echo(name)}' is not supported by this gateway")
    for name, allowed in _ONLY.items():
        if name in document and document[name] is not None and document[name] != allowed:
            unsupported.add(name, f"only {allowed} is supported")

    model = _string(violations, "model", document.get("model"), required=True, maximum=MAX_MODEL_CHARS)
    messages = _messages(violations, unsupported, document.get("messages"))
    temperature = _number(violations, "temperature", document.get("temperature"))
    if temperature is not None and not TEMPERATURE_RANGE[0] <= temperature <= TEMPERATURE_RANGE[1]:
        violations.add("temperature", f"must be between {TEMPERATURE_RANGE[0]:g} and {TEMPERATURE_RANGE[1]:g}")
    top_p = _number(violations, "top_p", document.get("top_p"))
    if top_p is not None and not 0.0 < top_p <= 1.0:
        violations.add("top_p", "must be greater than 0 and at most 1")
    max_tokens = _max_tokens(violations, document)
    stop = _stop(violations, document.get("stop"))
    user = _string(violations, "user", document.get("user"), maximum=MAX_USER_CHARS)
    stream = _boolean(violations, "stream", document.get("stream"))
    include_usage = _stream_options(violations, unsupported, document.get("stream_options"), stream)

    problems = [*unsupported, *violations]
    if problems:
        error_class = UnsupportedParameter if unsupported else InvalidArgument
        summary = "; ".join(f"{v.field}: {v.description}" for v in problems)
        raise error_class(
            f"invalid request: {summary}",
            reason=UnsupportedParameter.default_reason if unsupported else "INVALID_REQUEST_BODY",
            field_violations=problems,
        )
    assert model is not None  # required: its absence is a violation
    return ChatRequest(
        model=model,
        agent_id=model_agent_id(model),
        messages=tuple(messages),
        overrides=Overrides(temperature=temperature, top_p=top_p, max_output_tokens=max_tokens, stop=stop, user=user),
        stream=bool(stream),
        include_usage=include_usage,
    )


# -- the body ------------------------------------------------------------------------


def _refuse(description: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid request body: {description}",
        reason="INVALID_REQUEST_BODY",
        field_violations=[FieldViolation("body", description)],
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {_echo(key)!r}")
        document[key] = value
    return document


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise _refuse("is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
        document = loads_bounded(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise _refuse("is not UTF-8") from None
    except JsonTooDeep as error:
        raise _refuse(f"nests too deeply: {error}") from None
    except ValueError as error:
        raise _refuse(f"is not valid JSON: {_echo(str(error))}") from None
    if not isinstance(document, dict):
        raise _refuse("must be a JSON object")
    return document


# -- values --------------------------------------------------------------------------


def _echo(text: str, limit: int = 80) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _string(violations: Violations, field: str, value: Any, *, required: bool = False, maximum: int) -> str | None:
    if value is None:
        if required:
            violations.add(field, "is required")
        return None
    if not isinstance(value, str):
        violations.add(field, "must be a string")
        return None
    problem = text_problem(value, maximum)
    if problem:
        violations.add(field, problem)
    elif required and not value.strip():
        violations.add(field, "must not be blank")
    return value


def _number(violations: Violations, field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        violations.add(field, "must be a number")
        return None
    return float(value)


def _boolean(violations: Violations, field: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    violations.add(field, "must be true or false")
    return None


def _max_tokens(violations: Violations, document: Mapping[str, Any]) -> int | None:
    given = {name: document[name] for name in ("max_completion_tokens", "max_tokens") if document.get(name) is not None}
    if len(given) > 1:
        violations.add("max_tokens", "send max_completion_tokens or max_tokens, not both")
        return None
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int):
            violations.add(name, "must be an integer")
        elif value < 1:
            violations.add(name, "must be at least 1")
        else:
            return value
    return None


def _stop(violations: Violations, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    sequences = [value] if isinstance(value, str) else value
    if not isinstance(sequences, list) or not sequences:
        violations.add("stop", "must be a string or a non-empty array of strings")
        return ()
    if len(sequences) > MAX_STOP_SEQUENCES:
        violations.add("stop", f"must have at most {MAX_STOP_SEQUENCES} sequences")
        return ()
    kept: list[str] = []
    for index, sequence in enumerate(sequences):
        field = "stop" if isinstance(value, str) else f"stop[{index}]"
        if not isinstance(sequence, str):
            violations.add(field, "must be a string")
            continue
        problem = text_problem(sequence, MAX_STOP_CHARS)
        if problem:
            violations.add(field, problem)
        elif not sequence:
            violations.add(field, f"must be 1 to {MAX_STOP_CHARS} characters")
        else:
            kept.append(sequence)
    return tuple(kept)


def _stream_options(violations: Violations, unsupported: Violations, value: Any, stream: bool | None) -> bool:
    if value is None:
        return False
    if not stream:
        violations.add("stream_options", "is only allowed when stream is true")
        return False
    if not isinstance(value, dict):
        violations.add("stream_options", "must be an object")
        return False
    for name in value:
        if name != "include_usage":
            unsupported.add(f"stream_options.{_echo(name)}", "is not supported by this gateway")
    include = _boolean(violations, "stream_options.include_usage", value.get("include_usage"))
    return bool(include)


def _messages(violations: Violations, unsupported: Violations, value: Any) -> list[ChatMessage]:
    if value is None:
        violations.add("messages", "is required")
        return []
    if not isinstance(value, list) or not value:
        violations.add("messages", "must be a non-empty array")
        return []
    if len(value) > MAX_MESSAGES:
        violations.add("messages", f"must have at most {MAX_MESSAGES} messages")
        return []
    messages = []
    for index, item in enumerate(value):
        message = _message(violations, unsupported, f"messages[{index}]", item)
        if message is not None:
            messages.append(message)
    return messages


def _message(violations: Violations, unsupported: Violations, field: str, item: Any) -> ChatMessage | None:
    if not isinstance(item, dict):
        violations.add(field, "must be an object with a role and a content")
        return None
    for name in item:
        if name not in _MESSAGE_FIELDS:
            unsupported.add(f"{field}.{_echo(name)}", "is not supported by this gateway")
    role_name = item.get("role")
    role = _ROLES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        if isinstance(role_name, str) and role_name in ("tool", "function"):
            unsupported.add(f"{field}.role", f"'{role_name}' messages are not supported by this gateway")
        else:
            violations.add(f"{field}.role", f"must be one of {', '.join(_ROLES)}")
    content = _content(violations, unsupported, f"{field}.content", item.get("content"))
    if role is None or content is None:
        return None
    return ChatMessage(role, content)


def _content(violations: Violations, unsupported: Violations, field: str, value: Any) -> str | None:
    """Text, or an array of text parts (joined); other parts (images, audio, files) are unsupported."""
    if isinstance(value, str):
        problem = text_problem(value, MAX_LONG_TEXT_CHARS)
        if problem:
            violations.add(field, problem)
            return None
        return value
    if not isinstance(value, list) or not value:
        violations.add(field, "must be a string or a non-empty array of text parts")
        return None
    texts: list[str] = []
    for index, part in enumerate(value):
        where = f"{field}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            if isinstance(kind, str):
                unsupported.add(f"{where}.type", f"'{_echo(kind)}' parts are not supported by this gateway")
            else:
                violations.add(where, "must be an object with type 'text' and its text")
            continue
        extra = [name for name in part if name not in ("type", "text")]
        for name in extra:
            unsupported.add(f"{where}.{_echo(name)}", "is not supported by this gateway")
        text = part.get("text")
        if not isinstance(text, str):
            violations.add(f"{where}.text", "must be a string")
            continue
        problem = text_problem(text, MAX_LONG_TEXT_CHARS)
        if problem:
            violations.add(f"{where}.text", problem)
            continue
        texts.append(text)
    return "".join(texts) if len(texts) == len(value) else None
