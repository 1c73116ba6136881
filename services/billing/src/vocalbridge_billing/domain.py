"""Billing's domain: usage events as a producer sends them (drafts), their
validation and pricing into ledger entries, the filters of the usage reports
and the shapes of their results. Pure: no I/O, no protobuf."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vocalbridge_common.errors import AlreadyExists, InvalidArgument, invalid_fields
from vocalbridge_common.ids import parse_name
from vocalbridge_common.pagination import PageKey, PageRequest, clamp_page_size
from vocalbridge_common.pricing import (
    DEFAULT_SPEECH_PROVIDER,
    SPEECH_UNITS,
    PriceRow,
    PriceUnit,
    Quantities,
    charge,
    quantize_audio_seconds,
    select_prices,
)
from vocalbridge_common.validation import Violations
from vocalbridge_common.vocabulary import AttemptOutcome, Channel

MAX_BATCH_EVENTS = 500  # billing_service.proto: RecordUsageRequest.events, 1 to 500
MAX_ATTEMPTS = 50
MAX_COUNT = 10**9  # tokens or characters of one turn
MAX_AUDIO_SECONDS = 86_400.0  # one turn's audio: a day is already absurd
# One turn's latency or backoff, in ns: what the ledger's bigint holds (a Duration can reach
# 3e20 ns). The latency histograms bucket the whole range (latency_bucket).
MAX_DURATION_NS = 2**63 - 1
# One turn's reported cost: a million dollars, far inside bigint even summed in the rollups.
MAX_COST_MICROS = 10**12
MAX_ERROR_MESSAGE = 500
MAX_PROVIDER_CHARS = 64
MAX_MODEL_CHARS = 100
# At most this many field violations or conflicting ids are put in one error
# (the rich status travels in a trailer, which has a size limit).
MAX_REPORTED = 20

# The collections billing names. Ids in them are the producer's (an event id) or
# other services' ids, recorded as they come: billing checks their shape, not their origin.
USAGE_EVENTS = "usageEvents"
TENANTS = "tenants"
AGENTS = "agents"
SESSIONS = "sessions"
MESSAGES = "messages"
PRICES = "prices"
EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RESOURCE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
PRICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
PRICE_ID_PREFIX = "prc"


class Grouping(enum.StrEnum):
    """How a usage summary groups its totals (billing.v1.GroupBy)."""

    DAY = "DAY"
    AGENT = "AGENT"
    PROVIDER = "PROVIDER"
    CHANNEL = "CHANNEL"


@dataclass(frozen=True)
class Unrecognized:
    """An enum number this version does not know. Kept rather than dropped, so that
    validation names its field together with the request's other problems."""

    number: int


# -- errors ---------------------------------------------------------------------


class UsageEventConflict(AlreadyExists):
    default_reason = "USAGE_EVENT_CONFLICT"

    def __init__(self, event_ids: Sequence[str]) -> None:
        named = sorted(event_ids)
        shown = ",".join(named[:MAX_REPORTED])
        super().__init__(
            f"{len(named)} usage event id(s) already recorded with different content; nothing in the batch was "
            f"recorded: {shown}",
            metadata={"eventIds": shown, "conflictCount": str(len(named))},
        )


def refuse(violations: Violations) -> InvalidArgument:
    """One INVALID_ARGUMENT for a whole batch, naming at most MAX_REPORTED of its violations."""
    error = invalid_fields(violations[:MAX_REPORTED])
    if len(violations) > MAX_REPORTED:
        error.message = f"{len(violations)} invalid fields, the first {MAX_REPORTED} shown: {error.message}"
        error.args = (error.message,)
    return error


def check_page_size(page_size: int, violations: Violations) -> None:
    """The common pagination policy's verdict on `page_size` (AIP-158: clamped above the
    maximum, refused when negative), reported with the request's other violations so
    that one error names every problem."""
    try:
        clamp_page_size(page_size)
    except InvalidArgument as error:
        violations.extend(error.field_violations)


# -- recording: drafts and their validation ----------------------------------------


@dataclass(frozen=True)
class AttemptDraft:
    provider: str
    outcome: AttemptOutcome | None  # None: unset or unknown to this version, which is invalid
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
    """A usage event exactly as the producer sent it (resource names, enum values).

    Every field, under its name, goes into the content digest stored with the event:
    renaming or adding a field changes the digest of every event, and a re-send of an
    event recorded before the change would be refused as a conflict.
    """

    name: str
    tenant: str
    agent: str
    agent_version: int
    session: str
    message: str
    channel: Channel | None  # None: unset or unknown to this version, which is invalid
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

        def encode(value: object) -> str:
            if isinstance(value, datetime):
                return value.astimezone(UTC).isoformat()
            raise TypeError(type(value))

        # The enums are StrEnums: they encode as their values, the names the ledger stores.
        body = json.dumps(_fields_of(self), sort_keys=True, separators=(",", ":"), default=encode)
        return hashlib.sha256(body.encode()).hexdigest()


def _fields_of(value: object) -> object:
    """What dataclasses.asdict gives for a draft (nested dataclasses as dicts, tuples as
    tuples), without its deep copies: the digest depends on it, byte for byte."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _fields_of(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return tuple(_fields_of(item) for item in value)
    return value


@dataclass(frozen=True)
class NewUsageEvent:
    """A valid draft, with ids parsed out of its resource names."""

    event_id: str
    tenant_id: str
    agent_id: str
    agent_version: int
    session_id: str
    message_id: str
    channel: Channel
    provider: str
    model: str
    quantities: Quantities
    reported_cost_micros: int
    price_ids: tuple[str, ...]
    event_time: datetime
    delivery: DeliveryDraft
    digest: str


def _name_id(
    violations: Violations,
    field: str,
    value: str,
    collection: str,
    pattern: re.Pattern[str],
    *,
    required: bool = True,
) -> str:
    if not value:
        if required:
            violations.add(field, f"is required, as `{collection}/{{id}}`")
        return ""
    resource_id = parse_name(value, collection, pattern)
    if resource_id is None:
        violations.add(field, f"must be `{collection}/{{id}}` (letters, digits, '-' and '_')")
        return ""
    return resource_id


def _message_id(violations: Violations, field: str, value: str, session_id: str) -> str:
    """The message id of `sessions/{session_id}/messages/{message_id}`; "" when unset."""
    if not value:
        return ""
    parts = value.split("/")
    in_session = message_id = None
    if len(parts) == 4:
        in_session = parse_name("/".join(parts[:2]), SESSIONS, RESOURCE_ID)
        message_id = parse_name("/".join(parts[2:]), MESSAGES, RESOURCE_ID)
    if in_session is None or message_id is None:
        violations.add(field, "must be `sessions/{session_id}/messages/{message_id}`")
        return ""
    if session_id and in_session != session_id:
        violations.add(field, "must be a message of the event's session")
    return message_id


def _count(violations: Violations, field: str, value: int) -> None:
    if value < 0:
        violations.add(field, "must not be negative")
    elif value > MAX_COUNT:
        violations.add(field, f"must be at most {MAX_COUNT}")


def _provider(violations: Violations, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            violations.add(field, "is required")
    elif len(value) > MAX_PROVIDER_CHARS or value != value.strip() or any(ord(ch) < 32 for ch in value):
        violations.add(field, f"must be a provider name of at most {MAX_PROVIDER_CHARS} characters")


def _duration(violations: Violations, field: str, nanoseconds: int) -> None:
    if not (0 <= nanoseconds <= MAX_DURATION_NS):
        violations.add(field, f"must be between 0 and {MAX_DURATION_NS} nanoseconds")


def validate_event(
    draft: UsageEventDraft, prefix: str, now: datetime, max_skew: timedelta, violations: Violations
) -> NewUsageEvent | None:
    """The ledger entry for `draft`, or None after adding its problems to `violations`."""
    before = len(violations)
    event_id = _name_id(violations, f"{prefix}.name", draft.name, USAGE_EVENTS, EVENT_ID)
    tenant_id = _name_id(violations, f"{prefix}.tenant", draft.tenant, TENANTS, TENANT_ID)
    # Speech used on its own (the voice service's Transcribe and Synthesize) belongs to no
    # agent or session: such an event bills no tokens and names neither.
    standalone = (
        draft.channel is Channel.VOICE
        and not (draft.agent or draft.session or draft.message)
        and draft.prompt_tokens == draft.completion_tokens == 0
    )
    agent_id = _name_id(violations, f"{prefix}.agent", draft.agent, AGENTS, RESOURCE_ID, required=not standalone)
    # A chat completion of the OpenAI-compatible API may run outside any session: it names an
    # agent but no session and no message. A billed message is always a session's.
    session_id = _name_id(
        violations, f"{prefix}.session", draft.session, SESSIONS, RESOURCE_ID, required=bool(draft.message)
    )
    message_id = _message_id(violations, f"{prefix}.message", draft.message, session_id)
    if draft.agent_version < 1 and not standalone:
        violations.add(f"{prefix}.agent_version", "must be at least 1")
    if draft.channel is None:
        violations.add(f"{prefix}.channel", "must be CHANNEL_TEXT or CHANNEL_VOICE")
    _provider(violations, f"{prefix}.provider", draft.provider)
    if len(draft.model) > MAX_MODEL_CHARS:
        violations.add(f"{prefix}.model", f"must be at most {MAX_MODEL_CHARS} characters")
    _count(violations, f"{prefix}.prompt_tokens", draft.prompt_tokens)
    _count(violations, f"{prefix}.completion_tokens", draft.completion_tokens)
    _count(violations, f"{prefix}.tts_characters", draft.tts_characters)
    audio = draft.audio_seconds
    if not (0 <= audio <= MAX_AUDIO_SECONDS):  # also refuses NaN
        violations.add(f"{prefix}.audio_seconds", f"must be between 0 and {MAX_AUDIO_SECONDS:g}")
    if not (0 <= draft.cost_micros <= MAX_COST_MICROS):
        violations.add(f"{prefix}.cost_micros", f"must be between 0 and {MAX_COST_MICROS}")
    price_ids = tuple(
        _name_id(violations, f"{prefix}.prices[{index}].name", name, PRICES, PRICE_ID)
        for index, name in enumerate(draft.price_names)
    )
    if draft.event_time is None:
        violations.add(f"{prefix}.event_time", "is required")
    elif draft.event_time > now + max_skew:
        violations.add(f"{prefix}.event_time", "must not be in the future")
    delivery = draft.delivery or DeliveryDraft("", "", False, (), 0)
    _provider(violations, f"{prefix}.delivery.provider", delivery.provider, required=False)
    if delivery.provider and draft.provider and delivery.provider != draft.provider:
        violations.add(f"{prefix}.delivery.provider", "must be the event's provider")
    if len(delivery.model) > MAX_MODEL_CHARS:
        violations.add(f"{prefix}.delivery.model", f"must be at most {MAX_MODEL_CHARS} characters")
    _duration(violations, f"{prefix}.delivery.latency", delivery.latency_ns)
    if len(delivery.attempts) > MAX_ATTEMPTS:
        violations.add(f"{prefix}.delivery.attempts", f"must have at most {MAX_ATTEMPTS} attempts")
    for index, attempt in enumerate(delivery.attempts[:MAX_ATTEMPTS]):
        field = f"{prefix}.delivery.attempts[{index}]"
        _provider(violations, f"{field}.provider", attempt.provider)
        if attempt.outcome is None:
            violations.add(f"{field}.outcome", "must be a known ATTEMPT_OUTCOME_ value")
        _duration(violations, f"{field}.latency", attempt.latency_ns)
        _duration(violations, f"{field}.backoff", attempt.backoff_ns)
    if len(violations) > before or draft.channel is None or draft.event_time is None:
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
        quantities=Quantities(
            draft.prompt_tokens, draft.completion_tokens, quantize_audio_seconds(audio), draft.tts_characters
        ),
        reported_cost_micros=draft.cost_micros,
        price_ids=price_ids,
        event_time=draft.event_time.astimezone(UTC),
        delivery=delivery,
        digest=draft.content_digest(),
    )


# -- recording: ledger entries ----------------------------------------------------------


@dataclass(frozen=True)
class RecordedAttempt:
    """One delivery attempt as the ledger keeps it."""

    provider: str
    outcome: AttemptOutcome
    latency_ns: int
    backoff_ns: int
    error_message: str  # at most MAX_ERROR_MESSAGE characters


@dataclass(frozen=True)
class LedgerEntry:
    """A usage event as billing records it: priced by billing, at the prices in effect
    at the event time, with its delivery record summarized."""

    event: NewUsageEvent
    cost_micros: int
    # The price row charged for each unit the event consumed and a price was in effect for.
    price_ids: Mapping[PriceUnit, str]
    # Units consumed without a price in effect: charged nothing.
    unpriced_units: tuple[PriceUnit, ...]
    record_time: datetime

    @property
    def event_id(self) -> str:
        return self.event.event_id

    @property
    def event_day(self) -> str:
        """The UTC calendar day of the event, what DAY groups by."""
        return self.event.event_time.astimezone(UTC).strftime("%Y-%m-%d")

    @property
    def attempts(self) -> tuple[RecordedAttempt, ...]:
        # A valid event's attempts all have an outcome (validate_event refuses the others).
        return tuple(
            RecordedAttempt(
                attempt.provider,
                attempt.outcome,
                attempt.latency_ns,
                attempt.backoff_ns,
                attempt.error_message[:MAX_ERROR_MESSAGE],
            )
            for attempt in self.event.delivery.attempts
            if attempt.outcome is not None
        )

    @property
    def attempt_count(self) -> int:
        """Calls made to providers; a skip for an open circuit made none."""
        return sum(1 for a in self.attempts if a.outcome is not AttemptOutcome.CIRCUIT_OPEN)

    @property
    def failed_attempt_count(self) -> int:
        return sum(1 for a in self.attempts if a.outcome.is_failure)

    @property
    def circuit_open_skips(self) -> int:
        return sum(1 for a in self.attempts if a.outcome is AttemptOutcome.CIRCUIT_OPEN)

    @property
    def started_provider(self) -> str:
        """The provider the turn tried first; "" without a delivery record."""
        attempts = self.event.delivery.attempts
        return attempts[0].provider if attempts else ""

    @property
    def agrees_with_producer(self) -> bool:
        """Whether the producer charged the same cost at the same price rows."""
        return self.cost_micros == self.event.reported_cost_micros and sorted(self.price_ids.values()) == sorted(
            self.event.price_ids
        )


def price_event(event: NewUsageEvent, price_list: Sequence[PriceRow], now: datetime) -> LedgerEntry:
    """Prices `event` with the shared pricing function at the rows in effect at its time.

    Token units are priced by the event's provider and model; speech units by the speech
    engine whose price rows the producer named (the default engine when it named none).
    """
    by_id = {row.price_id: row for row in price_list}
    speech_provider = DEFAULT_SPEECH_PROVIDER
    for price_id in event.price_ids:
        named = by_id.get(price_id)
        if named is not None and named.unit in SPEECH_UNITS:
            speech_provider = named.provider
    prices = select_prices(price_list, event.provider, event.model, speech_provider, event.event_time)
    result = charge(event.quantities, prices)
    return LedgerEntry(
        event=event,
        cost_micros=result.cost_micros,
        price_ids={row.unit: row.price_id for row in result.prices_used},
        unpriced_units=result.unpriced_units,
        record_time=now,
    )


@dataclass(frozen=True)
class RecordResult:
    accepted: int
    duplicates: int


# -- reading: recorded events ------------------------------------------------------------


@dataclass(frozen=True)
class RecordedDelivery:
    provider: str
    model: str
    fallback_used: bool
    latency_ns: int
    attempts: tuple[RecordedAttempt, ...]

    @property
    def sent(self) -> bool:
        """Whether the producer sent a delivery record (an event without one reads back empty)."""
        return bool(self.provider or self.model or self.fallback_used or self.latency_ns or self.attempts)


@dataclass(frozen=True)
class RecordedEvent:
    """A ledger entry as read back: its usage, billing's cost, the price rows it used."""

    event_id: str
    tenant_id: str
    agent_id: str
    agent_version: int
    session_id: str
    message_id: str  # "" when the producer named no message
    channel: Channel
    provider: str
    model: str
    quantities: Quantities
    cost_micros: int
    prices: tuple[PriceRow, ...]
    event_time: datetime
    record_time: datetime
    delivery: RecordedDelivery


EventCursor = tuple[datetime, str]  # (event_time, event_id): events are listed in this order


def event_page_key(event: RecordedEvent) -> PageKey:
    return [event.event_time.astimezone(UTC).isoformat(), event.event_id]


def event_cursor(request: PageRequest) -> EventCursor | None:
    """The position a ListUsageEvents page token names; None on the first page."""
    key = request.after_strs(2)
    if key is None:
        return None
    event_time, event_id = key
    return datetime.fromisoformat(event_time), event_id


# -- reading: the filters of the usage reports -------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    """Filters of the usage reports as the caller sent them (resource names, enum values)."""

    start: datetime | None = None
    end: datetime | None = None
    agent: str = ""
    provider: str = ""
    channel: Channel | Unrecognized | None = None  # None: any channel
    session: str = ""


@dataclass(frozen=True)
class UsageFilter:
    """Optional filters shared by the usage queries (empty = no filter)."""

    start: datetime | None = None
    end: datetime | None = None
    agent_id: str = ""
    provider: str = ""
    channel: Channel | None = None
    session_id: str = ""


def usage_filter(query: UsageQuery, violations: Violations, *, default_end: datetime | None) -> UsageFilter:
    """`query` with its names parsed; its problems are added to `violations`."""
    agent_id = session_id = ""
    if query.agent:
        agent_id = parse_name(query.agent, AGENTS, RESOURCE_ID) or ""
        if not agent_id:
            violations.add("agent", "must be `agents/{agent_id}`")
    if query.session:
        session_id = parse_name(query.session, SESSIONS, RESOURCE_ID) or ""
        if not session_id:
            violations.add("session", "must be `sessions/{session_id}`")
    if len(query.provider) > MAX_PROVIDER_CHARS:
        violations.add("provider", f"must be at most {MAX_PROVIDER_CHARS} characters")
    channel = query.channel
    if isinstance(channel, Unrecognized):
        violations.add("channel", "must be CHANNEL_TEXT, CHANNEL_VOICE or unset")
        channel = None
    start = query.start.astimezone(UTC) if query.start else None
    end = query.end.astimezone(UTC) if query.end else default_end
    if start is not None and end is not None and start >= end:
        if query.end is not None:
            violations.add("end_time", "must be after start_time")
        else:
            violations.add("start_time", "must be before end_time, which defaults to now")
    return UsageFilter(start, end, agent_id, query.provider, channel, session_id)


def event_list_query(tenant_id: str, usage_filter: UsageFilter) -> str:
    """What a ListUsageEvents page token is bound to: the tenant and every filter."""
    fields = {
        "q": USAGE_EVENTS,
        "t": tenant_id,
        "start": usage_filter.start.isoformat() if usage_filter.start else None,
        "end": usage_filter.end.isoformat() if usage_filter.end else None,
        "agent_id": usage_filter.agent_id,
        "provider": usage_filter.provider,
        "channel": usage_filter.channel.value if usage_filter.channel else "",
        "session_id": usage_filter.session_id,
    }
    return json.dumps(fields, sort_keys=True)


def known_grouping(group_by: Grouping | Unrecognized | None, violations: Violations) -> Grouping | None:
    """The grouping asked for (None: totals only); an unknown one is added to `violations`."""
    if isinstance(group_by, Unrecognized):
        violations.add("group_by", "must be DAY, AGENT, PROVIDER, CHANNEL or unset")
        return None
    return group_by


def group_key(grouping: Grouping, value: str) -> str:
    """The key of a group as the summary names it: agents by resource name, the rest as stored."""
    return f"{AGENTS}/{value}" if grouping is Grouping.AGENT else value


# -- reading: report results --------------------------------------------------------------


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


def percentile_cont(sorted_values: Sequence[int] | Sequence[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


# -- reading: the daily rollups ------------------------------------------------------------
#
# The ledger's sums are kept per tenant and UTC day as well (the rollup tables, maintained
# by the database in the transaction that inserts the events): a report reads the whole days
# of its range from them and only the partial days at its edges from the ledger itself.


@dataclass(frozen=True)
class DaySplit:
    """A report's range, split into whole UTC days and the rest.

    `days` is the half-open range of whole days `[first, end)` as `YYYY-MM-DD` (first None:
    every day before `end`), None when the range holds no whole day. `windows` are the parts
    of the range outside those days, each `[start, end)` (start None: from the first event),
    read from the ledger. Together they cover the range exactly once.
    """

    days: tuple[str | None, str] | None
    windows: tuple[tuple[datetime | None, datetime], ...]


def _midnight(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def split_by_day(start: datetime | None, end: datetime) -> DaySplit:
    """`[start, end)` as whole UTC days and the partial days at its edges."""
    end_midnight = _midnight(end)
    if start is None:
        first_midnight = None
    else:
        first_midnight = _midnight(start)
        if first_midnight < start:
            first_midnight += timedelta(days=1)
        if first_midnight >= end_midnight:
            return DaySplit(None, ((start, end),))
    windows: list[tuple[datetime | None, datetime]] = []
    if start is not None and first_midnight is not None and start < first_midnight:
        windows.append((start, first_midnight))
    if end_midnight < end:
        windows.append((end_midnight, end))
    first_day = _day(first_midnight) if first_midnight is not None else None
    return DaySplit((first_day, _day(end_midnight)), tuple(windows))


def ledger_only(f: UsageFilter) -> DaySplit:
    """The whole range read from the ledger: what the reports read before the rollups, and
    what report_split's answers equal."""
    if f.end is None:
        raise ValueError("a report's range has an end (now, unless the caller set one)")
    return DaySplit(None, ((f.start, f.end),))


def report_split(f: UsageFilter) -> DaySplit:
    """How a report reads its range: whole days from the rollups, the rest from the ledger;
    all of it from the ledger when a filter is not a rollup dimension (a session)."""
    if f.end is None or f.session_id:
        return ledger_only(f)
    return split_by_day(f.start, f.end)


# Latency percentiles come from a histogram: a latency in nanoseconds falls in a bucket that
# keeps its highest LATENCY_SUB_BUCKET_BITS + 1 bits (values below 2**(bits + 1) keep them
# all: a bucket of their own). Each power of two is cut into 2**bits buckets of equal width,
# so a bucket's midpoint is within 1 / 2**(bits + 1) of every latency in it, relatively.
# Histograms of days, agents and providers add up bucket by bucket.
LATENCY_SUB_BUCKET_BITS = 5
LATENCY_RELATIVE_ERROR = 1 / 2 ** (LATENCY_SUB_BUCKET_BITS + 1)  # 1/64, about 1.6%
_EXACT_BELOW = 2 ** (LATENCY_SUB_BUCKET_BITS + 1)


def latency_bucket(latency_ns: int) -> int:
    """The histogram bucket of a latency (>= 0); larger latencies, larger buckets."""
    shift = latency_ns.bit_length() - (LATENCY_SUB_BUCKET_BITS + 1)
    if shift <= 0:
        return latency_ns
    return (shift << LATENCY_SUB_BUCKET_BITS) + (latency_ns >> shift)


def latency_bucket_bounds(bucket: int) -> tuple[int, int]:
    """The lowest and the highest latency of a bucket, both inclusive."""
    if bucket < _EXACT_BELOW:
        return bucket, bucket
    shift = (bucket >> LATENCY_SUB_BUCKET_BITS) - 1
    leading = bucket - (shift << LATENCY_SUB_BUCKET_BITS)
    return leading << shift, ((leading + 1) << shift) - 1


def latency_bucket_value(bucket: int) -> float:
    """What a bucket's latencies are estimated as: its midpoint."""
    low, high = latency_bucket_bounds(bucket)
    return (low + high) / 2


def histogram_percentile(buckets: Sequence[tuple[int, int]], fraction: float) -> float | None:
    """percentile_cont over a histogram, `(bucket, count)` pairs in bucket order: the same
    interpolation between the two closest ranks, each rank's latency estimated as its
    bucket's midpoint. Within LATENCY_RELATIVE_ERROR of percentile_cont over the latencies
    themselves: both ranks' estimates are, and so is any value between them."""
    total = sum(count for _, count in buckets)
    if total == 0:
        return None
    position = fraction * (total - 1)
    lower = int(position)
    upper = min(lower + 1, total - 1)
    values: dict[int, float] = {}
    seen = 0
    for bucket, count in buckets:
        for rank in (lower, upper):
            if rank not in values and seen <= rank < seen + count:
                values[rank] = latency_bucket_value(bucket)
        seen += count
        if upper in values:
            break
    return values[lower] + (values[upper] - values[lower]) * (position - lower)


# -- the price list --------------------------------------------------------------------------


PriceCursor = tuple[str, str, str, datetime, str]  # (provider, model, unit, effective_time, id): list order


def price_list_query(provider: str) -> str:
    """What a ListPrices page token is bound to: the provider filter (the list is global)."""
    return json.dumps({"q": PRICES, "provider": provider}, sort_keys=True)


def price_page_key(price: PriceRow) -> PageKey:
    return [
        price.provider,
        price.model,
        price.unit.value,
        price.effective_time.astimezone(UTC).isoformat(),
        price.price_id,
    ]


def price_cursor(request: PageRequest) -> PriceCursor | None:
    """The position a ListPrices page token names; None on the first page."""
    key = request.after_strs(5)
    if key is None:
        return None
    provider, model, unit, effective_time, price_id = key
    return provider, model, unit, datetime.fromisoformat(effective_time), price_id


def price_filter_violations(provider: str, violations: Violations) -> None:
    if len(provider) > MAX_PROVIDER_CHARS:
        violations.add("provider", f"must be at most {MAX_PROVIDER_CHARS} characters")


def new_price_violations(
    provider: str, model: str, unit: PriceUnit | str, micros_per_unit: int, effective_time: datetime, now: datetime
) -> Violations:
    """What is wrong with a new price row. A row in effect is never changed, so a new
    row may not take effect in the past."""
    violations = Violations()
    if not provider or len(provider) > MAX_PROVIDER_CHARS:
        violations.add("provider", f"is required, at most {MAX_PROVIDER_CHARS} characters")
    if len(model) > MAX_MODEL_CHARS:
        violations.add("model", f"must be at most {MAX_MODEL_CHARS} characters")
    if unit not in {member.value for member in PriceUnit}:
        violations.add("unit", "must be a PriceUnit")
    if micros_per_unit < 0:
        violations.add("micros_per_unit", "must not be negative")
    if effective_time.tzinfo is None or effective_time < now:
        violations.add("effective_time", "must be a time-zone-aware time, not in the past")
    return violations
