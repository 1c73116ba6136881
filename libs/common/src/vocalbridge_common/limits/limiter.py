"""Rate limits and budgets enforced: what the auth service's Check and the turn path call.

One store call per check where any limit applies, none where none does. When the store
cannot answer, the configured failure mode decides (open: let the request through,
closed: refuse it with 429 LIMITS_UNAVAILABLE); either way it is logged and counted,
never a 5xx. After a failure the store is not asked again for `retry_seconds`, so a
dead Redis costs no timeout per request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol, TypeVar

from vocalbridge_common import metrics
from vocalbridge_common.errors import BudgetExceeded, LimitsUnavailable, RateLimited
from vocalbridge_common.ids import new_id
from vocalbridge_common.limits.model import (
    TENANT,
    BudgetConfig,
    Target,
    TargetKind,
    TenantLimits,
    Window,
)
from vocalbridge_common.limits.store import (
    Admission,
    Bucket,
    BucketState,
    BudgetState,
    CounterStore,
    Hold,
    Spend,
    StoreUnavailable,
    seeded,
)

log = logging.getLogger(__name__)

# Refusals and store failures, by kind: the counters an operator alerts on.
REFUSALS = metrics.counter(
    "limit_refusals", "Requests refused by a rate limit or a budget, by reason and level.", ("reason", "level")
)
STORE_FAILURES = metrics.counter(
    "limit_store_failures", "Limit checks the counter store could not answer, by what the gateway did.", ("action",)
)

REQUESTS = "req"
TOKENS = "tok"

T = TypeVar("T")


class FailureMode(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class SpentSource(Protocol):
    """What the ledger says a budget's target spent in a window (re-seeds a lost window)."""

    async def spent(self, tenant_id: str, target: Target, window: Window) -> int: ...


@dataclass(frozen=True)
class KeySpace:
    """Where a tenant's counters live in the store (see redis_store.py for the layout)."""

    prefix: str = "vb:"

    def bucket(self, tenant_id: str, target: Target, kind: str) -> str:
        return f"{self.prefix}{{{tenant_id}}}:rl:{target.resource_id}:{kind}"

    def window(self, tenant_id: str, target: Target, window: Window) -> str:
        return f"{self.prefix}{{{tenant_id}}}:b:{target.resource_id}:{window.start_ms}"


@dataclass(frozen=True)
class TurnTicket:
    """What a started turn holds: its reservation, and where its tokens are counted."""

    tenant_id: str
    reservation_id: str
    token_buckets: tuple[tuple[str, int], ...]  # (key, tokens per minute)
    budgets: tuple[BudgetConfig, ...]
    held_keys: tuple[str, ...]
    reserved_micros: int


def rate_headers(state: BucketState | None) -> dict[str, str]:
    if state is None:
        return {}
    return {
        "x-ratelimit-limit": str(state.limit),
        "x-ratelimit-remaining": str(max(0, state.remaining)),
        "x-ratelimit-reset": str(math.ceil(state.reset_ms / 1000)),
    }


class Limiter:
    def __init__(
        self,
        store: CounterStore,
        *,
        keys: KeySpace | None = None,
        rate_failure: FailureMode = FailureMode.OPEN,
        budget_failure: FailureMode = FailureMode.CLOSED,
        spent: SpentSource | None = None,
        reservation_ttl_seconds: float = 900.0,
        window_grace_seconds: float = 3600.0,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keys = keys or KeySpace()
        self._rate_failure = rate_failure
        self._budget_failure = budget_failure
        self._spent = spent
        self._reservation_ttl_ms = int(reservation_ttl_seconds * 1000)
        self._grace_ms = int(window_grace_seconds * 1000)
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._down_until = 0.0
        self._last_warning = -math.inf

    @property
    def store(self) -> CounterStore:
        return self._store

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _call(self, work: Callable[[], Awaitable[T]]) -> T:
        if self._monotonic() < self._down_until:
            raise StoreUnavailable("the counter store failed moments ago")
        try:
            return await work()
        except StoreUnavailable:
            self._down_until = self._monotonic() + self._retry_seconds
            raise

    def _failed(self, mode: FailureMode, what: str, error: Exception) -> None:
        """Logs (at most every 10 s) and counts a check the store could not answer; raises
        LimitsUnavailable when failing closed."""
        STORE_FAILURES.labels(action="allowed" if mode is FailureMode.OPEN else "refused").inc()
        now = self._monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            log.warning(
                "limit counters unavailable (%s); %s are failing %s",
                error,
                what,
                mode.value,
                extra={"failure_mode": mode.value},
            )
        if mode is FailureMode.CLOSED:
            REFUSALS.labels(reason="LIMITS_UNAVAILABLE", level="-").inc()
            raise LimitsUnavailable(what) from None

    # -- requests at the edge ----------------------------------------------------------

    def request_buckets(self, limits: TenantLimits, key_id: str) -> list[tuple[Target, Bucket]]:
        """The buckets a request of key `key_id` is charged to (none: no limit applies)."""
        charged: list[tuple[Target, Bucket]] = []
        for target in (TENANT, Target.key(key_id)):
            config = limits.rate(target)
            if config is None:
                continue
            tenant = limits.tenant_id
            if config.requests_per_minute:
                charged.append(
                    (target, Bucket(self._keys.bucket(tenant, target, REQUESTS), config.requests_per_minute))
                )
            if config.tokens_per_minute:
                bucket = Bucket(self._keys.bucket(tenant, target, TOKENS), config.tokens_per_minute, 0, consume=False)
                charged.append((target, bucket))
        return charged

    async def check_request(self, limits: TenantLimits, key_id: str) -> dict[str, str]:
        """Charges a request to the tenant's and the key's request buckets and checks their
        token buckets; the x-ratelimit-* headers of the tightest request bucket. Raises
        RateLimited (or LimitsUnavailable when failing closed)."""
        charged = self.request_buckets(limits, key_id)
        if not charged:
            return {}
        buckets = [bucket for _, bucket in charged]
        try:
            admission = await self._call(lambda: self._store.admit(self._now_ms(), buckets))
        except StoreUnavailable as error:
            self._failed(self._rate_failure, "rate limits", error)
            return {}
        return self._verdict(charged, admission)

    def _verdict(self, charged: Sequence[tuple[Target, Bucket]], admission: Admission) -> dict[str, str]:
        requests = [state for (_, bucket), state in zip(charged, admission.buckets, strict=True) if bucket.consume]
        tightest = min(requests, key=lambda s: s.remaining, default=None)
        headers = rate_headers(tightest)
        index = admission.refused_bucket
        if index is None:
            return headers
        target, bucket = charged[index]
        state = admission.buckets[index]
        retry = max(1, math.ceil(state.retry_after_ms / 1000))
        what = "requestsPerMinute" if bucket.consume else "tokensPerMinute"
        REFUSALS.labels(reason="RATE_LIMITED", level=target.kind.value).inc()
        scope = "this tenant" if target.kind is TargetKind.TENANT else target.name
        unit = "requests" if bucket.consume else "tokens"
        raise RateLimited(
            f"rate limit of {bucket.limit} {unit} per minute for {scope} reached; retry in {retry} s",
            retry_after_seconds=retry,
            metadata={"rateLimit": f"rateLimits/{target.resource_id}", "limit": what, "value": str(bucket.limit)},
            headers=headers or rate_headers(state),
        )

    # -- turns ----------------------------------------------------------------------------

    async def start_turn(self, limits: TenantLimits, key_id: str, agent_id: str, cost_micros: int) -> TurnTicket | None:
        """Before a turn calls any provider: charges the agent's request bucket, checks its
        token bucket, and reserves `cost_micros` (the turn's worst case) in every budget
        that applies (`agent_id` empty: no agent, as for speech on its own). None when no limit applies to the turn at all (nothing to settle).
        Raises RateLimited, BudgetExceeded (or LimitsUnavailable when failing closed)."""
        tenant = limits.tenant_id
        agent = Target.agent(agent_id)  # no agent (speech on its own): an id no limit names
        charged: list[tuple[Target, Bucket]] = []
        agent_rate = limits.rate(agent) if agent_id else None
        if agent_rate is not None and agent_rate.requests_per_minute:
            charged.append((agent, Bucket(self._keys.bucket(tenant, agent, REQUESTS), agent_rate.requests_per_minute)))
        if agent_rate is not None and agent_rate.tokens_per_minute:
            bucket = Bucket(self._keys.bucket(tenant, agent, TOKENS), agent_rate.tokens_per_minute, 0, consume=False)
            charged.append((agent, bucket))
        token_buckets = []
        targets = (TENANT, Target.key(key_id), agent) if agent_id else (TENANT, Target.key(key_id))
        for target in targets:
            config = limits.rate(target)
            if config is not None and config.tokens_per_minute:
                token_buckets.append((self._keys.bucket(tenant, target, TOKENS), config.tokens_per_minute))
        budgets = tuple(b for t in targets if (b := limits.budget(t)) is not None)
        if not charged and not budgets:
            if not token_buckets:
                return None
            return TurnTicket(tenant, "", tuple(token_buckets), (), (), 0)
        now = self._clock()
        now_ms = int(now * 1000)
        windows = [budget.window(datetime.fromtimestamp(now, UTC)) for budget in budgets]
        holds = tuple(
            Hold(self._keys.window(tenant, b.target, w), b.limit_micros, cost_micros, w.end_ms + self._grace_ms)
            for b, w in zip(budgets, windows, strict=True)
        )
        reservation_id = new_id("rsv") if holds else ""
        buckets = [bucket for _, bucket in charged]
        mode = self._budget_failure if holds else self._rate_failure
        try:
            admission = await self._call(
                lambda: self._store.admit(now_ms, buckets, holds, reservation_id, now_ms + self._reservation_ttl_ms)
            )
            if admission.missing:
                seeds = {i: await self._seed(tenant, budgets[i], windows[i]) for i in admission.missing}
                holds = seeded(holds, seeds)
                admission = await self._call(
                    lambda: self._store.admit(now_ms, buckets, holds, reservation_id, now_ms + self._reservation_ttl_ms)
                )
        except StoreUnavailable as error:
            self._failed(mode, "budgets" if holds else "rate limits", error)
            return TurnTicket(tenant, "", tuple(token_buckets), (), (), 0)
        if admission.refused_bucket is not None:
            self._verdict(charged, admission)
        if admission.refused_budget is not None:
            index = admission.refused_budget
            self._refuse_budget(budgets[index], windows[index], admission.budgets[index], cost_micros)
        return TurnTicket(
            tenant, reservation_id, tuple(token_buckets), budgets, tuple(h.key for h in holds), cost_micros
        )

    async def _seed(self, tenant_id: str, budget: BudgetConfig, window: Window) -> int:
        if self._spent is None:
            return 0
        try:
            return await self._spent.spent(tenant_id, budget.target, window)
        except Exception as error:
            raise StoreUnavailable(f"the ledger could not say what was spent: {error}") from error

    @staticmethod
    def _refuse_budget(budget: BudgetConfig, window: Window, state: BudgetState, needed: int) -> None:
        REFUSALS.labels(reason="BUDGET_EXCEEDED", level=budget.target.kind.value).inc()
        left = max(0, budget.limit_micros - state.spent - state.reserved)
        scope = "this tenant" if budget.target.kind is TargetKind.TENANT else budget.target.name
        raise BudgetExceeded(
            f"the budget of {scope} has {left} micro-dollars left until {window.end.isoformat()}"
            f" and this request may cost up to {needed}",
            metadata={
                "budget": f"budgets/{budget.target.resource_id}",
                "limitMicros": str(budget.limit_micros),
                "spentMicros": str(state.spent),
                "reservedMicros": str(state.reserved),
                "requiredMicros": str(needed),
                "windowEndTime": window.end.isoformat().replace("+00:00", "Z"),
            },
        )

    async def finish_turn(self, ticket: TurnTicket | None, tokens: int, spent_micros: int) -> None:
        """After the turn is stored: counts its tokens and replaces its reservation by what it
        cost (in the windows of now, where the ledger counts it too). Never raises: a
        failure here only loses a count (the ledger still has the spend)."""
        if ticket is None:
            return
        now = self._clock()
        forced = [Bucket(key, limit, tokens) for key, limit in ticket.token_buckets] if tokens > 0 else []
        spends = [
            Spend(
                self._keys.window(ticket.tenant_id, b.target, b.window(datetime.fromtimestamp(now, UTC))), spent_micros
            )
            for b in ticket.budgets
        ]
        await self._settle(int(now * 1000), forced, ticket.held_keys, ticket.reservation_id, spends)

    async def release_turn(self, ticket: TurnTicket | None) -> None:
        """The turn failed or was refused later on: frees its reservation, counts nothing."""
        if ticket is None or not ticket.held_keys:
            return
        await self._settle(self._now_ms(), [], ticket.held_keys, ticket.reservation_id, [])

    async def _settle(
        self, now_ms: int, forced: Sequence[Bucket], held: Sequence[str], rid: str, spends: Sequence[Spend]
    ) -> None:
        if not forced and not held and not spends:
            return
        try:
            await self._call(lambda: self._store.settle(now_ms, forced, held, rid, spends))
        except StoreUnavailable as error:
            STORE_FAILURES.labels(action="settle_lost").inc()
            log.warning("could not settle a turn's limits: %s", error)

    # -- what is left (the API's usage fields) ---------------------------------------------

    async def bucket_states(
        self, tenant_id: str, target: Target, requests_per_minute: int | None, tokens_per_minute: int | None
    ) -> tuple[BucketState | None, BucketState | None]:
        """The request and token buckets of `target` now (None where there is no limit)."""
        wanted = [
            (kind, limit) for kind, limit in ((REQUESTS, requests_per_minute), (TOKENS, tokens_per_minute)) if limit
        ]
        if not wanted:
            return None, None
        buckets = [Bucket(self._keys.bucket(tenant_id, target, kind), limit) for kind, limit in wanted]
        states = dict(
            zip(
                (k for k, _ in wanted),
                await self._call(lambda: self._store.peek_buckets(self._now_ms(), buckets)),
                strict=True,
            )
        )
        return states.get(REQUESTS), states.get(TOKENS)

    async def budget_state(self, tenant_id: str, budget: BudgetConfig, now: datetime) -> tuple[Window, BudgetState]:
        """The current window of `budget` and what it spent and holds, seeded from the ledger
        when the store does not have it."""
        window = budget.window(now)
        key = self._keys.window(tenant_id, budget.target, window)
        state = await self._call(lambda: self._store.peek_budget(self._now_ms(), key))
        if state is None:
            state = BudgetState(await self._seed(tenant_id, budget, window), 0)
        return window, state
