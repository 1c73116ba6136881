"""Rate limits and budgets: the admin use cases (Get/List/Update/Delete with their usage),
the limits Check enforces, and GetTenantLimits for the other enforcing services."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from vocalbridge_auth.domain import ApiKeyNotFound
from vocalbridge_auth.domain.limits import (
    BUDGET_FIELDS,
    BUDGETS,
    RATE_LIMIT_FIELDS,
    RATE_LIMITS,
    BudgetNotFound,
    BudgetPatch,
    ConcurrentChange,
    LimitEtagMismatch,
    RateLimitNotFound,
    RateLimitPatch,
    StoredBudget,
    StoredRateLimit,
    parse_limit_name,
    patched_budget,
    patched_rate_limit,
    resolve_mask,
)
from vocalbridge_auth.repository import AccountRepository, LimitRepository
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.limiter import Limiter
from vocalbridge_common.limits.model import (
    BudgetConfig,
    LimitDefaults,
    RateLimitConfig,
    Target,
    TargetKind,
    TenantLimits,
)
from vocalbridge_common.limits.store import BucketState, BudgetState, StoreUnavailable
from vocalbridge_common.pagination import Page, Paginator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitView:
    """A stored rate limit and, when the counters answered, its buckets now."""

    stored: StoredRateLimit
    requests: BucketState | None = None
    tokens: BucketState | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class BudgetView:
    """A stored budget and, when the counters answered, its current window."""

    stored: StoredBudget
    window_start: datetime | None = None
    window_end: datetime | None = None
    state: BudgetState | None = None


class LimitService:
    def __init__(
        self,
        db: Database,
        paginator: Paginator,
        limiter: Limiter,
        defaults: LimitDefaults,
        cache_ttl_seconds: float,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._db = db
        self._paginator = paginator
        self._limiter = limiter
        self._defaults = defaults
        self._clock = clock
        # What Check enforces: each tenant's limits, read again at most every TTL.
        self.cache = TenantLimitsCache(self.tenant_limits, cache_ttl_seconds)

    async def tenant_limits(self, tenant_id: str) -> TenantLimits:
        """The tenant's limits as enforced: its own, the configured defaults where it has none."""
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = LimitRepository(session, tenant_id)
            rates = [r.config for r in await repo.rate_limits()]
            budgets = [b.config for b in await repo.budgets()]
        return self._defaults.apply(TenantLimits.of(tenant_id, rates, budgets))

    # -- rate limits ---------------------------------------------------------------------

    async def get_rate_limit(self, tenant_id: str, name: str) -> RateLimitView:
        target = parse_limit_name(name, RATE_LIMITS)
        if target is not None:
            async with self._db.tenant_transaction(tenant_id) as session:
                stored = await LimitRepository(session, tenant_id).rate_limit(target)
            if stored is not None:
                return await self._rate_view(tenant_id, stored)
        raise RateLimitNotFound(name)

    async def list_rate_limits(self, tenant_id: str, page_size: int, page_token: str) -> Page[RateLimitView]:
        request = self._paginator.request(f"rateLimits/{tenant_id}", page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            found = await LimitRepository(session, tenant_id).rate_limits(request.after_str(), request.fetch)
        page = self._paginator.page(request, found, key=lambda r: r.config.target.resource_id)
        return Page([await self._rate_view(tenant_id, r) for r in page.items], page.next_page_token)

    async def update_rate_limit(
        self,
        tenant_id: str,
        name: str,
        patch: RateLimitPatch,
        mask_paths: list[str],
        etag: str,
        allow_missing: bool,
    ) -> RateLimitView:
        target = parse_limit_name(name, RATE_LIMITS)
        if target is None:
            raise RateLimitNotFound(name)
        fields = resolve_mask(mask_paths, RATE_LIMIT_FIELDS, "RateLimit") if mask_paths else patch.populated()
        now = self._clock()
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = LimitRepository(session, tenant_id)
            current = await repo.rate_limit(target)
            self._precondition(name, current, etag, allow_missing, RateLimitNotFound)
            config = patched_rate_limit(target, current.config if current else None, patch, fields)
            await self._target_exists(session, tenant_id, target)
            if not await repo.save_rate_limit(config, current, now):
                raise ConcurrentChange(name)
            saved = await repo.rate_limit(target)
        self.cache.forget(tenant_id)
        assert saved is not None  # written in this transaction
        return await self._rate_view(tenant_id, saved)

    async def delete_rate_limit(self, tenant_id: str, name: str, etag: str) -> None:
        target = parse_limit_name(name, RATE_LIMITS)
        if target is None:
            raise RateLimitNotFound(name)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = LimitRepository(session, tenant_id)
            current = await repo.rate_limit(target)
            self._precondition(name, current, etag, False, RateLimitNotFound)
            assert current is not None
            if not await repo.delete_rate_limit(target, current.revision):
                raise ConcurrentChange(name)
        self.cache.forget(tenant_id)

    async def _rate_view(self, tenant_id: str, stored: StoredRateLimit) -> RateLimitView:
        config = stored.config
        try:
            requests, tokens = await self._limiter.bucket_states(
                tenant_id, config.target, config.requests_per_minute, config.tokens_per_minute
            )
        except StoreUnavailable:
            return RateLimitView(stored)
        return RateLimitView(stored, requests, tokens, self._clock())

    # -- budgets -----------------------------------------------------------------------------

    async def get_budget(self, tenant_id: str, name: str) -> BudgetView:
        target = parse_limit_name(name, BUDGETS)
        if target is not None:
            async with self._db.tenant_transaction(tenant_id) as session:
                stored = await LimitRepository(session, tenant_id).budget(target)
            if stored is not None:
                return await self._budget_view(tenant_id, stored)
        raise BudgetNotFound(name)

    async def list_budgets(self, tenant_id: str, page_size: int, page_token: str) -> Page[BudgetView]:
        request = self._paginator.request(f"budgets/{tenant_id}", page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            found = await LimitRepository(session, tenant_id).budgets(request.after_str(), request.fetch)
        page = self._paginator.page(request, found, key=lambda b: b.config.target.resource_id)
        return Page([await self._budget_view(tenant_id, b) for b in page.items], page.next_page_token)

    async def update_budget(
        self,
        tenant_id: str,
        name: str,
        patch: BudgetPatch,
        mask_paths: list[str],
        etag: str,
        allow_missing: bool,
    ) -> BudgetView:
        target = parse_limit_name(name, BUDGETS)
        if target is None:
            raise BudgetNotFound(name)
        fields = resolve_mask(mask_paths, BUDGET_FIELDS, "Budget") if mask_paths else patch.populated()
        now = self._clock()
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = LimitRepository(session, tenant_id)
            current = await repo.budget(target)
            self._precondition(name, current, etag, allow_missing, BudgetNotFound)
            config = patched_budget(target, current.config if current else None, patch, fields)
            await self._target_exists(session, tenant_id, target)
            if not await repo.save_budget(config, current, now):
                raise ConcurrentChange(name)
            saved = await repo.budget(target)
        self.cache.forget(tenant_id)
        assert saved is not None  # written in this transaction
        return await self._budget_view(tenant_id, saved)

    async def delete_budget(self, tenant_id: str, name: str, etag: str) -> None:
        target = parse_limit_name(name, BUDGETS)
        if target is None:
            raise BudgetNotFound(name)
        async with self._db.tenant_transaction(tenant_id) as session:
            repo = LimitRepository(session, tenant_id)
            current = await repo.budget(target)
            self._precondition(name, current, etag, False, BudgetNotFound)
            assert current is not None
            if not await repo.delete_budget(target, current.revision):
                raise ConcurrentChange(name)
        self.cache.forget(tenant_id)

    async def _budget_view(self, tenant_id: str, stored: StoredBudget) -> BudgetView:
        now = self._clock()
        try:
            window, state = await self._limiter.budget_state(tenant_id, stored.config, now.astimezone(UTC))
        except StoreUnavailable:
            return BudgetView(stored)
        return BudgetView(stored, window.start, window.end, state)

    # -- shared rules --------------------------------------------------------------------------

    @staticmethod
    def _precondition(
        name: str,
        current: StoredRateLimit | StoredBudget | None,
        etag: str,
        allow_missing: bool,
        not_found: type[RateLimitNotFound] | type[BudgetNotFound],
    ) -> None:
        if current is None and not allow_missing:
            raise not_found(name)
        if etag and (current is None or etag != current.etag):
            raise LimitEtagMismatch(name)

    @staticmethod
    async def _target_exists(session: AsyncSession, tenant_id: str, target: Target) -> None:
        """A key's limit needs the key (of this tenant). An agent's is accepted by the form of
        its id: agents belong to another service, and a limit on an id that names none of the
        tenant's agents never applies to anything."""
        if target.kind is TargetKind.KEY and await AccountRepository(session, tenant_id).get_key(target.id) is None:
            raise ApiKeyNotFound(target.id)

    async def copy_limits(self, session: AsyncSession, tenant_id: str, source: Target, successor: Target) -> None:
        """Gives a rotated key's successor the same rate limit and budget (inside the rotation's
        transaction)."""
        repo = LimitRepository(session, tenant_id)
        now = self._clock()
        rate = await repo.rate_limit(source)
        if rate is not None:
            await repo.save_rate_limit(
                RateLimitConfig(successor, rate.config.requests_per_minute, rate.config.tokens_per_minute), None, now
            )
        budget = await repo.budget(source)
        if budget is not None:
            config = budget.config
            await repo.save_budget(
                BudgetConfig(successor, config.limit_micros, config.period, config.window_seconds), None, now
            )
        self.cache.forget(tenant_id)
