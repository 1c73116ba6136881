"""The agents domain: configuration values, their validation, update masks,
resource names and etags. Pure functions and frozen values; no I/O, no protobuf."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from vocalbridge_common.errors import (
    Aborted,
    AgentNotFound,
    FieldViolation,
    InvalidArgument,
    NotFound,
    echo,
    invalid_fields,
)
from vocalbridge_common.ids import ID_PATTERN
from vocalbridge_common.validation import Violations
from vocalbridge_common.voices import VoiceCatalogue

ID_PREFIX = "agt"
COLLECTION = "agents"
MAX_VERSION = 2**31 - 1  # AgentVersion.version is an int32

MAX_MODEL_CHARS = 100
TEMPERATURE_RANGE = (0.0, 2.0)
MAX_OUTPUT_TOKENS_RANGE = (1, 8192)
WORDS_PER_MINUTE_RANGE = (80, 450)
VOICE_NAME = re.compile(r"^[A-Za-z0-9_+/-]{1,50}$")


# -- values ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelParameters:
    """None means "the provider's default"."""

    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class VoiceSettings:
    voice: str = ""  # empty: the speech engine's default voice
    words_per_minute: int = 0  # 0: the default rate


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent version pins: shared by the agent and each of its versions."""

    display_name: str = ""
    system_prompt: str = ""
    primary_provider: str = ""
    fallback_provider: str = ""
    model: str = ""
    parameters: ModelParameters = field(default_factory=ModelParameters)
    voice: VoiceSettings = field(default_factory=VoiceSettings)


@dataclass(frozen=True)
class Agent:
    id: str
    version: int
    config: AgentConfig
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return agent_name(self.id)

    @property
    def etag(self) -> str:
        return etag_for(self.id, self.version)


@dataclass(frozen=True)
class AgentVersion:
    agent_id: str
    version: int
    config: AgentConfig
    create_time: datetime

    @property
    def name(self) -> str:
        return version_name(self.agent_id, self.version)


# -- errors ------------------------------------------------------------------


class AgentVersionNotFound(NotFound):
    default_reason = "AGENT_VERSION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"agent version {echo(name)!r} not found", metadata={"name": echo(name)})


class EtagMismatch(Aborted):
    default_reason = "ETAG_MISMATCH"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"agent {name!r} changed since the given etag was read; get it again and retry",
            metadata={"name": name},
        )


class ConcurrentModification(Aborted):
    default_reason = "CONCURRENT_MODIFICATION"

    def __init__(self, name: str) -> None:
        super().__init__(f"agent {name!r} is being changed concurrently; retry", metadata={"name": name})


# -- names and etags -----------------------------------------------------------


def agent_name(agent_id: str) -> str:
    return f"{COLLECTION}/{agent_id}"


def version_name(agent_id: str, version: int) -> str:
    return f"{COLLECTION}/{agent_id}/versions/{version}"


def etag_for(agent_id: str, version: int) -> str:
    """Opaque to clients, but a pure function of (agent, version): nothing to store,
    and an etag of one agent never matches another."""
    digest = hashlib.sha256(f"{agent_id}/{version}".encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


def _malformed(field_path: str, expected: str) -> InvalidArgument:
    return invalid_fields([FieldViolation(field_path, f"must have the form {expected}")])


def parse_agent_name(name: str, field_path: str) -> str:
    """The agent id in `agents/{agent_id}`.

    An empty name or one outside the `agents/` collection is a malformed request
    (INVALID_ARGUMENT); a well-shaped name whose id cannot exist is simply not
    found, exactly like another tenant's agent.
    """
    if not name:
        raise invalid_fields([FieldViolation(field_path, "is required")])
    collection, _, agent_id = name.partition("/")
    if collection != COLLECTION or not agent_id or "/" in agent_id:
        raise _malformed(field_path, "agents/{agent_id}")
    if not agent_id.startswith(ID_PREFIX + "_") or not ID_PATTERN.match(agent_id):
        raise AgentNotFound(name)
    return agent_id


def parse_version_name(name: str, field_path: str = "name") -> tuple[str, int | None]:
    """(agent id, version) of `agents/{agent_id}/versions/{version}`; the version is
    None when it cannot exist (not a positive int32), so the caller still reports
    whether the agent itself exists."""
    if not name:
        raise invalid_fields([FieldViolation(field_path, "is required")])
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != COLLECTION or parts[2] != "versions" or not parts[1] or not parts[3]:
        raise _malformed(field_path, "agents/{agent_id}/versions/{version}")
    agent_id = parse_agent_name(f"{parts[0]}/{parts[1]}", field_path)
    raw = parts[3]
    version = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 10 else None
    if version is not None and not 1 <= version <= MAX_VERSION:
        version = None
    return agent_id, version


# -- update masks ---------------------------------------------------------------

SCALAR_FIELDS = ("display_name", "system_prompt", "primary_provider", "fallback_provider", "model")
PARAMETER_FIELDS = ("temperature", "top_p", "max_output_tokens")
VOICE_FIELDS = ("voice", "words_per_minute")
LEAF_PATHS = frozenset(
    (*SCALAR_FIELDS, *(f"parameters.{f}" for f in PARAMETER_FIELDS), *(f"voice.{f}" for f in VOICE_FIELDS))
)
# A message path replaces the whole message (AIP-134): subfields absent from the
# request are cleared. `*` replaces every updatable field.
GROUP_PATHS = {
    "parameters": frozenset(f"parameters.{f}" for f in PARAMETER_FIELDS),
    "voice": frozenset(f"voice.{f}" for f in VOICE_FIELDS),
    "*": LEAF_PATHS,
}
# Fields of Agent that exist but are not changed through the mask: identity,
# output-only fields, and the etag (a precondition, not data).
IMMUTABLE_FIELDS = frozenset({"name", "version", "etag", "create_time", "update_time"})

_UPPER = re.compile(r"[A-Z]")


def _snake_case(path: str) -> str:
    # Envoy's transcoder already turns `updateMask=displayName` into `display_name`
    # (FieldMask's JSON form is lowerCamelCase); gRPC clients may still send either.
    return _UPPER.sub(lambda m: "_" + m.group().lower(), path.strip())


def resolve_update_mask(paths: Iterable[str]) -> frozenset[str]:
    """The leaf paths an explicit update mask names; every bad path is reported at once."""
    violations = Violations()
    leaves: set[str] = set()
    for raw in paths:
        path = _snake_case(raw)
        if path in LEAF_PATHS:
            leaves.add(path)
        elif path in GROUP_PATHS:
            leaves |= GROUP_PATHS[path]
        elif path.split(".", 1)[0] in IMMUTABLE_FIELDS:
            violations.add("update_mask", f"{raw!r} cannot be changed")
        else:
            violations.add("update_mask", f"{raw!r} is not a field of Agent")
    if violations:
        raise invalid_fields(violations)
    return frozenset(leaves)


def apply_mask(current: AgentConfig, patch: AgentConfig, leaves: frozenset[str]) -> AgentConfig:
    """`current` with the fields in `leaves` taken from `patch`."""
    parameters = replace(
        current.parameters,
        **{f: getattr(patch.parameters, f) for f in PARAMETER_FIELDS if f"parameters.{f}" in leaves},
    )
    voice = replace(current.voice, **{f: getattr(patch.voice, f) for f in VOICE_FIELDS if f"voice.{f}" in leaves})
    scalars = {f: getattr(patch, f) for f in SCALAR_FIELDS if f in leaves}
    return replace(current, **scalars, parameters=parameters, voice=voice)


# -- validation -----------------------------------------------------------------


def _plain_text(violations: Violations, path: str, value: str, *, multiline: bool) -> None:
    """No NUL (PostgreSQL text cannot store it) and, on one-line fields, no control characters."""
    if multiline:
        if "\x00" in value:
            violations.add(path, "must not contain NUL characters")
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        violations.add(path, "must not contain control characters")


def validate_config(
    config: AgentConfig,
    *,
    known_providers: tuple[str, ...],
    max_system_prompt_chars: int,
    prefix: str = "agent",
    voices: VoiceCatalogue | None = None,
) -> Violations:
    """Every violation of `config`, with paths as the client sent them (`agent.…`). With the
    installed `voices`, a voice this deployment cannot speak is one too (without them, only
    the name's form is checked; a spoken turn refuses it later)."""
    violations = Violations()
    p = f"{prefix}."
    violations.display_name(p + "display_name", config.display_name)

    violations.length(p + "system_prompt", config.system_prompt, maximum=max_system_prompt_chars)
    _plain_text(violations, p + "system_prompt", config.system_prompt, multiline=True)

    known = ", ".join(known_providers)
    if not config.primary_provider:
        violations.add(p + "primary_provider", f"is required (one of: {known})")
    elif config.primary_provider not in known_providers:
        violations.add(p + "primary_provider", f"unknown provider; must be one of: {known}")
    if config.fallback_provider:
        if config.fallback_provider not in known_providers:
            violations.add(p + "fallback_provider", f"unknown provider; must be one of: {known}")
        elif config.fallback_provider == config.primary_provider:
            violations.add(p + "fallback_provider", "must differ from primary_provider")

    violations.length(p + "model", config.model, maximum=MAX_MODEL_CHARS)
    _plain_text(violations, p + "model", config.model, multiline=False)
    if config.model != config.model.strip():
        violations.add(p + "model", "must not start or end with whitespace")

    params = config.parameters
    low, high = TEMPERATURE_RANGE
    # `not low <= x <= high` also refuses NaN.
    if params.temperature is not None and not (math.isfinite(params.temperature) and low <= params.temperature <= high):
        violations.add(p + "parameters.temperature", f"must be between {low:g} and {high:g}")
    if params.top_p is not None and not (math.isfinite(params.top_p) and 0.0 < params.top_p <= 1.0):
        violations.add(p + "parameters.top_p", "must be greater than 0 and at most 1")
    low_tokens, high_tokens = MAX_OUTPUT_TOKENS_RANGE
    if params.max_output_tokens is not None and not low_tokens <= params.max_output_tokens <= high_tokens:
        violations.add(p + "parameters.max_output_tokens", f"must be between {low_tokens} and {high_tokens}")

    voice = config.voice
    if voice.voice and not VOICE_NAME.match(voice.voice):
        violations.add(p + "voice.voice", "must be 1 to 50 letters, digits, '-', '_', '+' or '/'")
    elif voices is not None:
        for problem in voices.problems(voice.voice, 0, p + "voice."):
            violations.add(problem.field, problem.description)
    low_wpm, high_wpm = WORDS_PER_MINUTE_RANGE
    if voice.words_per_minute != 0 and not low_wpm <= voice.words_per_minute <= high_wpm:
        violations.add(p + "voice.words_per_minute", f"must be 0 (the default) or between {low_wpm} and {high_wpm}")
    return violations
