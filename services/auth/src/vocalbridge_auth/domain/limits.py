"""Rate limits and budgets as the API manages them: names, stored values with their etags,
update masks, and validation. Pure: no I/O, no protobuf.

A limit's resource id is its target's (`tenant`, `key_…`, `agt_…`), so a target has at
most one rate limit and one budget, and a client can address them without listing.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_common.errors import Aborted, FailedPrecondition, NotFound, echo, invalid_fields
from vocalbridge_common.limits.model import (
    MAX_BUDGET_MICROS,
    MAX_REQUESTS_PER_MINUTE,
    MAX_TOKENS_PER_MINUTE,
    MAX_WINDOW_SECONDS,
    BudgetConfig,
    BudgetPeriod,
    RateLimitConfig,
    Target,
)
from vocalbridge_common.validation import Violations

RATE_LIMITS = "rateLimits"
BUDGETS = "budgets"

RATE_LIMIT_FIELDS = frozenset({"requests_per_minute", "tokens_per_minute"})
BUDGET_FIELDS = frozenset({"limit_micros", "period", "window_duration"})
_OUTPUT_ONLY = frozenset({"name", "target", "usage", "etag", "create_time", "update_time"})


class RateLimitNotFound(NotFound):
    default_reason = "RATE_LIMIT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"rate limit {echo(name)!r} not found", metadata={"name": echo(name)})


class BudgetNotFound(NotFound):
    default_reason = "BUDGET_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"budget {echo(name)!r} not found", metadata={"name": echo(name)})


class LimitEtagMismatch(Aborted):
    default_reason = "ETAG_MISMATCH"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name!r} changed since the given etag was read; get it again and retry", metadata={"name": name}
        )


class ConcurrentChange(Aborted):
    default_reason = "CONCURRENT_CHANGE"

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} was changed by another request at the same time; retry", metadata={"name": name})


class KeyNotRotatable(FailedPrecondition):
    """Only an active key that was not rotated before can be rotated."""

    def __init__(self, name: str, why: str, reason: str) -> None:
        super().__init__(f"API key {name!r} cannot be rotated: {why}", reason=reason, metadata={"name": name})


def parse_limit_name(name: str, collection: str) -> Target | None:
    """The target of `rateLimits/…` or `budgets/…`, or None when `name` is not one."""
    head, _, resource_id = name.partition("/")
    return Target.parse(resource_id) if head == collection else None


def etag_of(target: Target, revision: int, update_time: datetime) -> str:
    """Opaque; changes with every update, and a deleted and re-created limit never gets an
    etag of its earlier life (the update time is part of it)."""
    digest = hashlib.sha256(f"{target.resource_id}/{revision}/{update_time.isoformat()}".encode()).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


@dataclass(frozen=True)
class StoredRateLimit:
    config: RateLimitConfig
    create_time: datetime
    update_time: datetime
    revision: int

    @property
    def name(self) -> str:
        return f"{RATE_LIMITS}/{self.config.target.resource_id}"

    @property
    def etag(self) -> str:
        return etag_of(self.config.target, self.revision, self.update_time)


@dataclass(frozen=True)
class StoredBudget:
    config: BudgetConfig
    create_time: datetime
    update_time: datetime
    revision: int

    @property
    def name(self) -> str:
        return f"{BUDGETS}/{self.config.target.resource_id}"

    @property
    def etag(self) -> str:
        return etag_of(self.config.target, self.revision, self.update_time)


# -- update masks ---------------------------------------------------------------

_UPPER = re.compile(r"[A-Z]")


def _snake_case(path: str) -> str:
    return _UPPER.sub(lambda m: "_" + m.group().lower(), path.strip())


def resolve_mask(paths: Iterable[str], fields: frozenset[str], resource: str) -> frozenset[str]:
    """The fields an explicit update mask names; every bad path reported at once."""
    violations = Violations()
    leaves: set[str] = set()
    for raw in paths:
        path = _snake_case(raw)
        if path in fields:
            leaves.add(path)
        elif path in _OUTPUT_ONLY:
            violations.add("update_mask", f"{raw!r} cannot be changed")
        else:
            violations.add("update_mask", f"{raw!r} is not a field of {resource}")
    if violations:
        raise invalid_fields(violations)
    return frozenset(leaves)


# -- rate limits -------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitPatch:
    """An UpdateRateLimit request's values (None: not set in the request)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None

    def populated(self) -> frozenset[str]:
        return frozenset(f for f in RATE_LIMIT_FIELDS if getattr(self, f) is not None)


def patched_rate_limit(
    target: Target, current: RateLimitConfig | None, patch: RateLimitPatch, fields: frozenset[str]
) -> RateLimitConfig:
    """`current` (or nothing) with `fields` taken from `patch`; InvalidArgument naming every
    bad value."""
    violations = Violations()
    for field, maximum in (
        ("requests_per_minute", MAX_REQUESTS_PER_MINUTE),
        ("tokens_per_minute", MAX_TOKENS_PER_MINUTE),
    ):
        value = getattr(patch, field)
        if field in fields and value is not None and not 1 <= value <= maximum:
            violations.add(f"rate_limit.{field}", f"must be between 1 and {maximum:,} (leave it unset for no limit)")
    if violations:
        raise invalid_fields(violations)
    base = current or RateLimitConfig(target)
    config = RateLimitConfig(
        target,
        patch.requests_per_minute if "requests_per_minute" in fields else base.requests_per_minute,
        patch.tokens_per_minute if "tokens_per_minute" in fields else base.tokens_per_minute,
    )
    if config.requests_per_minute is None and config.tokens_per_minute is None:
        violations.add(
            "rate_limit",
            "set requests_per_minute, tokens_per_minute or both (to remove the limit, delete it)",
        )
        raise invalid_fields(violations)
    return config


# -- budgets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetPatch:
    """An UpdateBudget request's values (None: not set in the request)."""

    limit_micros: int | None
    period: BudgetPeriod | None
    window_seconds: int | None
    window_has_fraction: bool = False
    period_unknown: bool = False

    def populated(self) -> frozenset[str]:
        fields = set()
        if self.limit_micros is not None:
            fields.add("limit_micros")
        if self.period is not None or self.period_unknown:
            fields.add("period")
        if self.window_seconds is not None or self.window_has_fraction:
            fields.add("window_duration")
        return frozenset(fields)


def patched_budget(
    target: Target, current: BudgetConfig | None, patch: BudgetPatch, fields: frozenset[str]
) -> BudgetConfig:
    violations = Violations()
    limit = patch.limit_micros if "limit_micros" in fields else (current.limit_micros if current else None)
    if limit is None or not 1 <= limit <= MAX_BUDGET_MICROS:
        violations.add("budget.limit_micros", f"must be between 1 and {MAX_BUDGET_MICROS:,} micro-dollars")
    if "period" in fields and patch.period_unknown:
        violations.add("budget.period", "must be BUDGET_PERIOD_CALENDAR_MONTH or BUDGET_PERIOD_FIXED_WINDOW")
    period = (
        patch.period or BudgetPeriod.CALENDAR_MONTH
        if "period" in fields
        else (current.period if current else BudgetPeriod.CALENDAR_MONTH)
    )
    window = patch.window_seconds if "window_duration" in fields else (current.window_seconds if current else None)
    if "window_duration" in fields and patch.window_has_fraction:
        violations.add("budget.window_duration", "must be whole seconds")
    elif period is BudgetPeriod.FIXED_WINDOW:
        if window is None or not 1 <= window <= MAX_WINDOW_SECONDS:
            violations.add(
                "budget.window_duration", f"a fixed window needs a duration from 1 s to {MAX_WINDOW_SECONDS} s"
            )
    elif window is not None:
        if "window_duration" in fields:
            violations.add("budget.window_duration", "only a fixed window has a duration")
        else:
            window = None  # switched to calendar months: the old window length no longer applies
    if violations or limit is None:
        raise invalid_fields(violations)
    return BudgetConfig(target, limit, period, window if period is BudgetPeriod.FIXED_WINDOW else None)
