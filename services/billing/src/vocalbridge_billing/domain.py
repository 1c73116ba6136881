"""Billing's domain: usage events as a producer sends them (drafts), their
validation into ledger entries, and the shapes of the analytics results."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vocalbridge_common.pricing import PriceRow, Quantities
from vocalbridge_common.validation import Violations

MAX_BATCH_EVENTS = 500  # billing_service.proto: RecordUsageRequest.events, 1 to 500
MAX_ATTEMPTS = 50
MAX_COUNT = 10**9  # tokens or characters of one turn
MAX_AUDIO_SECONDS = 86_400.0  # one turn's audio: a day is already absurd
MAX_ERROR_MESSAGE = 500
# At most this many field violations or conflicting ids are put in one error
# (the rich status travels in a trailer, which has a size limit).
MAX_REPORTED = 20

EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RESOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
PRICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")

CHANNELS = ("CHANNEL_TEXT", "CHANNEL_VOICE")
SUCCESS = "SUCCESS"
CIRCUIT_OPEN = "CIRCUIT_OPEN"
OUTCOMES = (
    SUCCESS,
    "UNAVAILABLE",
    "TIMEOUT",
    "RATE_LIMITED",
    "BAD_REQUEST",
    "AUTHENTICATION_FAILED",
    CIRCUIT_OPEN,
    "DEADLINE_EXCEEDED",
    "PROVIDER_ERROR",
)
GROUPINGS = ("DAY", "AGENT", "PROVIDER", "CHANNEL")


@dataclass(frozen=True)
class AttemptDraft:
    provider: str
    outcome: str  # AttemptOutcome name without its prefix; anything else is invalid
    latency_ns: int
    backoff_ns: int
    error_message: str


@dataclass(frozen=True)
class DeliveryDraft:
    provider: str
    model: str
    fallback_used: bool
    attempts: tuple[AttemptDraft, ...]
    latency_ns: int


@dataclass(frozen=True)
class UsageEventDraft:
    """A usage event exactly as the producer sent it (resource names, enum names)."""

    name: str
    tenant: str
    agent: str
    agent_version: int
    session: str
    message: str
    channel: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    audio_seconds: float
    tts_characters: int
    cost_micros: int
    price_names: tuple[str, ...]
    event_time: datetime | None
    delivery: DeliveryDraft | None

    def content_digest(self) -> str:
        """SHA-256 over every field the producer sent: equal events, equal digests."""

        def encode(value):
            if isinstance(value, datetime):
                return value.astimezone(UTC).isoformat()
            raise TypeError(type(value))

        body = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"), default=encode)
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class NewUsageEvent:
    """A valid draft, with ids parsed out of its resource names."""

    event_id: str
    tenant_id: str
    agent_id: str
    agent_version: int
    session_id: str
    message_id: str
    channel: str
    provider: str
    model: str
    quantities: Quantities
    reported_cost_micros: int
    price_ids: tuple[str, ...]
    event_time: datetime
    delivery: DeliveryDraft
    digest: str


def _name_id(
    violations: Violations, field: str, value: str, collection: str, pattern: re.Pattern, *, required: bool = True
) -> str:
    if not value:
        if required:
            violations.add(field, f"is required, as `{collection}/{{id}}`")
        return ""
    head, _, resource_id = value.partition("/")
    if head != collection or not pattern.match(resource_id):
        violations.add(field, f"must be `{collection}/{{id}}` (letters, digits, '-' and '_')")
        return ""
    return resource_id


def _message_id(violations: Violations, field: str, value: str, session_id: str) -> str:
    if not value:
        return ""
    parts = value.split("/")
    if (
        len(parts) != 4
        or parts[0] != "sessions"
        or parts[2] != "messages"
        or not RESOURCE_ID.match(parts[1])
        or not RESOURCE_ID.match(parts[3])
    ):
        violations.add(field, "must be `sessions/{session_id}/messages/{message_id}`")
        return ""
    if session_id and parts[1] != session_id:
        violations.add(field, "must be a message of the event's session")
    return parts[3]


def _count(violations: Violations, field: str, value: int) -> None:
    if value < 0:
        violations.add(field, "must not be negative")
    elif value > MAX_COUNT:
        violations.add(field, f"must be at most {MAX_COUNT}")


def _provider(violations: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            violations.add(field, "is required")
    elif len(value) > 64 or value != value.strip() or any(ord(ch) < 32 for ch in value):
        violations.add(field, "must be a provider name of at most 64 characters")


def validate_event(
    draft: UsageEventDraft, prefix: str, now: datetime, max_skew: timedelta, violations: Violations
) -> NewUsageEvent | None:
    """The ledger entry for `draft`, or None after adding its problems to `violations`."""
    before = len(violations)
    event_id = _name_id(violations, f"{prefix}.name", draft.name, "usageEvents", EVENT_ID)
    tenant_id = _name_id(violations, f"{prefix}.tenant", draft.tenant, "tenants", TENANT_ID)
    agent_id = _name_id(violations, f"{prefix}.agent", draft.agent, "agents", RESOURCE_ID)
    session_id = _name_id(violations, f"{prefix}.session", draft.session, "sessions", RESOURCE_ID)
    message_id = _message_id(violations, f"{prefix}.message", draft.message, session_id)
    if draft.agent_version < 1:
        violations.add(f"{prefix}.agent_version", "must be at least 1")
    if draft.channel not in CHANNELS:
        violations.add(f"{prefix}.channel", "must be CHANNEL_TEXT or CHANNEL_VOICE")
    _provider(violations, f"{prefix}.provider", draft.provider)
    if len(draft.model) > 100:
        violations.add(f"{prefix}.model", "must be at most 100 characters")
    _count(violations, f"{prefix}.prompt_tokens", draft.prompt_tokens)
    _count(violations, f"{prefix}.completion_tokens", draft.completion_tokens)
    _count(violations, f"{prefix}.tts_characters", draft.tts_characters)
    audio = draft.audio_seconds
    if not (0 <= audio <= MAX_AUDIO_SECONDS):  # also refuses NaN
        violations.add(f"{prefix}.audio_seconds", f"must be between 0 and {MAX_AUDIO_SECONDS:g}")
    if draft.cost_micros < 0:
        violations.add(f"{prefix}.cost_micros", "must not be negative")
    price_ids = []
    for index, name in enumerate(draft.price_names):
        price_id = _name_id(violations, f"{prefix}.prices[{index}].name", name, "prices", PRICE_ID)
        price_ids.append(price_id)
    if draft.event_time is None:
        violations.add(f"{prefix}.event_time", "is required")
    elif draft.event_time > now + max_skew:
        violations.add(f"{prefix}.event_time", "must not be in the future")
    delivery = draft.delivery or DeliveryDraft("", "", False, (), 0)
    _provider(violations, f"{prefix}.delivery.provider", delivery.provider, required=False)
    if delivery.provider and draft.provider and delivery.provider != draft.provider:
        violations.add(f"{prefix}.delivery.provider", "must be the event's provider")
    if len(delivery.model) > 100:
        violations.add(f"{prefix}.delivery.model", "must be at most 100 characters")
    if delivery.latency_ns < 0:
        violations.add(f"{prefix}.delivery.latency", "must not be negative")
    if len(delivery.attempts) > MAX_ATTEMPTS:
        violations.add(f"{prefix}.delivery.attempts", f"must have at most {MAX_ATTEMPTS} attempts")
    for index, attempt in enumerate(delivery.attempts[:MAX_ATTEMPTS]):
        field = f"{prefix}.delivery.attempts[{index}]"
        _provider(violations, f"{field}.provider", attempt.provider)
        if attempt.outcome not in OUTCOMES:
            violations.add(f"{field}.outcome", "must be a known ATTEMPT_OUTCOME_ value")
        if attempt.latency_ns < 0:
            violations.add(f"{field}.latency", "must not be negative")
        if attempt.backoff_ns < 0:
            violations.add(f"{field}.backoff", "must not be negative")
    if len(violations) > before:
        return None
    return NewUsageEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        agent_id=agent_id,
        agent_version=draft.agent_version,
        session_id=session_id,
        message_id=message_id,
        channel=draft.channel,
        provider=draft.provider,
        model=draft.model,
        quantities=Quantities(draft.prompt_tokens, draft.completion_tokens, audio, draft.tts_characters),
        reported_cost_micros=draft.cost_micros,
        price_ids=tuple(price_ids),
        event_time=draft.event_time.astimezone(UTC),
        delivery=delivery,
        digest=draft.content_digest(),
    )


# -- read side ------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    accepted: int
    duplicates: int


@dataclass(frozen=True)
class RecordedAttempt:
    provider: str
    outcome: str
    latency_ns: int
    backoff_ns: int
    error_message: str


@dataclass(frozen=True)
class RecordedEvent:
    """A ledger entry as read back: the row, its attempts, the price rows it used."""

    row: object  # UsageEventRow
    attempts: tuple[RecordedAttempt, ...]
    prices: tuple[PriceRow, ...]


@dataclass(frozen=True)
class UsageFilter:
    """Optional filters shared by the analytics queries (empty = no filter)."""

    start: datetime | None = None
    end: datetime | None = None
    agent_id: str = ""
    provider: str = ""
    channel: str = ""
    session_id: str = ""


@dataclass(frozen=True)
class Totals:
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_millis: int = 0
    tts_characters: int = 0
    cost_micros: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


@dataclass(frozen=True)
class Summary:
    totals: Totals
    groups: tuple[tuple[str, Totals], ...]


@dataclass(frozen=True)
class ProviderStats:
    provider: str
    attempts: int = 0
    failed_attempts: int = 0
    circuit_open_skips: int = 0
    turns_served: int = 0
    turns_started: int = 0
    turns_fallen_back: int = 0
    latency_p50_ns: int = 0
    latency_p95_ns: int = 0

    @property
    def failure_rate(self) -> float:
        return self.failed_attempts / self.attempts if self.attempts else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.turns_fallen_back / self.turns_started if self.turns_started else 0.0


def percentile_cont(sorted_values: list[int] | list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)
