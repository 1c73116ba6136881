"""Rate limits and budgets as values: whom they apply to, their windows, and a tenant's set.

Pure: no I/O, no protobuf. Shared by the auth service (which stores them and enforces
request limits at the edge) and the services that enforce them on turns and speech.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from vocalbridge_common.ids import ID_PATTERN

# A rate limit counts per minute.
RATE_PERIOD_MS = 60_000

# Bounds that keep every counter exact in Redis' Lua numbers (doubles: integers up to 2**53).
MAX_REQUESTS_PER_MINUTE = 1_000_000
MAX_TOKENS_PER_MINUTE = 10_000_000_000
MAX_BUDGET_MICROS = 10**15
MAX_WINDOW_SECONDS = 366 * 24 * 3600


class TargetKind(StrEnum):
    TENANT = "tenant"
    KEY = "key"
    AGENT = "agent"


_ID_PREFIXES = {"key_": TargetKind.KEY, "agt_": TargetKind.AGENT}
_COLLECTIONS = {TargetKind.KEY: "apiKeys", TargetKind.AGENT: "agents"}


@dataclass(frozen=True)
class Target:
    """What a limit applies to: the whole tenant, one API key or one agent."""

    kind: TargetKind
    id: str = ""  # the key or agent id; empty for the tenant

    @property
    def resource_id(self) -> str:
        """The last segment of the limit's resource name: `tenant`, `key_…` or `agt_…`."""
        return self.id or TargetKind.TENANT.value

    @property
    def name(self) -> str:
        """`tenant`, `apiKeys/key_…` or `agents/agt_…`."""
        return f"{_COLLECTIONS[self.kind]}/{self.id}" if self.id else TargetKind.TENANT.value

    @classmethod
    def parse(cls, resource_id: str) -> Target | None:
        """The target a resource id names (`tenant`, `key_…`, `agt_…`), or None."""
        if resource_id == TargetKind.TENANT.value:
            return TENANT
        kind = _ID_PREFIXES.get(resource_id[:4])
        if kind is None or not ID_PATTERN.match(resource_id):
            return None
        return cls(kind, resource_id)

    @classmethod
    def key(cls, key_id: str) -> Target:
        return cls(TargetKind.KEY, key_id)

    @classmethod
    def agent(cls, agent_id: str) -> Target:
        return cls(TargetKind.AGENT, agent_id)


TENANT = Target(TargetKind.TENANT)


@dataclass(frozen=True)
class RateLimitConfig:
    target: Target
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class BudgetPeriod(StrEnum):
    CALENDAR_MONTH = "calendar_month"
    FIXED_WINDOW = "fixed_window"


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)


def month_window(now: datetime) -> Window:
    """The calendar month (UTC) `now` is in."""
    now = now.astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return Window(start, end)


def fixed_window(now: datetime, seconds: int) -> Window:
    """The window of `seconds` that `now` is in, windows counted from the Unix epoch."""
    epoch_seconds = int(now.timestamp())
    start = epoch_seconds - epoch_seconds % seconds
    begin = datetime.fromtimestamp(start, UTC)
    return Window(begin, begin + timedelta(seconds=seconds))


@dataclass(frozen=True)
class BudgetConfig:
    target: Target
    limit_micros: int
    period: BudgetPeriod = BudgetPeriod.CALENDAR_MONTH
    window_seconds: int | None = None  # FIXED_WINDOW only

    def window(self, now: datetime) -> Window:
        if self.period is BudgetPeriod.FIXED_WINDOW and self.window_seconds:
            return fixed_window(now, self.window_seconds)
        return month_window(now)


@dataclass(frozen=True)
class TenantLimits:
    """Everything a tenant is limited by, as enforced: its own limits, or the configured
    defaults where it has none at the tenant level."""

    tenant_id: str
    rate_limits: Mapping[Target, RateLimitConfig] = field(default_factory=dict)
    budgets: Mapping[Target, BudgetConfig] = field(default_factory=dict)

    @classmethod
    def of(cls, tenant_id: str, rates: Iterable[RateLimitConfig], budgets: Iterable[BudgetConfig]) -> TenantLimits:
        return cls(tenant_id, {r.target: r for r in rates}, {b.target: b for b in budgets})

    @property
    def empty(self) -> bool:
        return not self.rate_limits and not self.budgets

    def rate(self, target: Target) -> RateLimitConfig | None:
        return self.rate_limits.get(target)

    def budget(self, target: Target) -> BudgetConfig | None:
        return self.budgets.get(target)


@dataclass(frozen=True)
class LimitDefaults:
    """Tenant-wide defaults from configuration, for tenants without limits of their own."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_budget_micros: int | None = None

    def apply(self, limits: TenantLimits) -> TenantLimits:
        rates = dict(limits.rate_limits)
        budgets = dict(limits.budgets)
        if TENANT not in rates and (self.requests_per_minute or self.tokens_per_minute):
            rates[TENANT] = RateLimitConfig(TENANT, self.requests_per_minute, self.tokens_per_minute)
        if TENANT not in budgets and self.monthly_budget_micros:
            budgets[TENANT] = BudgetConfig(TENANT, self.monthly_budget_micros)
        return TenantLimits(limits.tenant_id, rates, budgets)
