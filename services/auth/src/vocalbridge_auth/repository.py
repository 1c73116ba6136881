"""Auth data access: rows in, domain values out (the one place that maps them).
Never commits: the service layer owns transactions.

Who may see what is in the class name: the tenant registry and the key lookup by
prefix are cross-tenant (system transactions); a tenant's account, its API keys,
is read and written in that tenant's transaction, every query filtered on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, func, insert, literal, or_, select, update

from vocalbridge_auth.domain import ApiKey, Tenant
from vocalbridge_auth.domain.limits import StoredBudget, StoredRateLimit
from vocalbridge_auth.models import ApiKeyRow, BudgetRow, RateLimitRow, TenantRow
from vocalbridge_common.db import UtcDateTime, insert_or_ignore
from vocalbridge_common.limits.model import BudgetConfig, BudgetPeriod, RateLimitConfig, Target
from vocalbridge_common.repository import SystemRepository, TenantRepository

# How a key's scopes are stored: one column, names joined by commas.
_SCOPE_SEPARATOR = ","


def _tenant_of(row: TenantRow) -> Tenant:
    return Tenant(id=row.id, display_name=row.display_name, create_time=row.create_time)


def _key_of(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        prefix=row.prefix,
        digest=row.digest,
        scopes=tuple(row.scopes.split(_SCOPE_SEPARATOR)),
        create_time=row.create_time,
        expire_time=row.expire_time,
        revoke_time=row.revoke_time,
        last_use_time=row.last_use_time,
        successor_id=row.successor_id,
    )


def _target(row: RateLimitRow | BudgetRow) -> Target:
    target = Target.parse(row.target)
    if target is None:  # pragma: no cover - only valid targets are ever written
        raise ValueError(f"stored limit with an invalid target {row.target!r}")
    return target


def _rate_limit_of(row: RateLimitRow) -> StoredRateLimit:
    return StoredRateLimit(
        RateLimitConfig(_target(row), row.requests_per_minute, row.tokens_per_minute),
        row.create_time,
        row.update_time,
        row.revision,
    )


def _budget_of(row: BudgetRow) -> StoredBudget:
    return StoredBudget(
        BudgetConfig(_target(row), row.limit_micros, BudgetPeriod(row.period), row.window_seconds),
        row.create_time,
        row.update_time,
        row.revision,
    )


class TenantRegistry(SystemRepository):
    """Every tenant, for the operator's RPCs. The tenants table is the registry itself,
    not tenant-owned data, so it has no row-level security."""

    async def get(self, tenant_id: str) -> Tenant | None:
        row = await self.session.get(TenantRow, tenant_id)
        return _tenant_of(row) if row is not None else None

    async def page(self, after_id: str | None, limit: int) -> list[Tenant]:
        """Tenants oldest first (ids sort by creation time), after `after_id`."""
        query = select(TenantRow).order_by(TenantRow.id).limit(limit)
        if after_id is not None:
            query = query.where(TenantRow.id > after_id)
        return [_tenant_of(row) for row in await self.session.scalars(query)]


class KeyLookup(SystemRepository):
    """Finds a presented key by its public prefix: cross-tenant by nature, since the
    tenant is what the lookup finds out."""

    async def find_by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self.session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))).one_or_none()
        return _key_of(row) if row is not None else None

    async def record_last_use(self, used: Mapping[str, datetime]) -> None:
        """Sets each key's last use time, never moving it back (workers write independently)."""
        for key_id, when in used.items():
            await self.session.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.id == key_id,
                    or_(ApiKeyRow.last_use_time.is_(None), ApiKeyRow.last_use_time < literal(when, UtcDateTime)),
                )
                .values(last_use_time=literal(when, UtcDateTime))
                .execution_options(synchronize_session=False)
            )


class AccountRepository(TenantRepository):
    """One tenant's account: its entry in the registry (written once, as it is created)
    and its API keys."""

    async def add_tenant(self, tenant: Tenant) -> None:
        if tenant.id != self.tenant_id:
            raise ValueError("a tenant is registered in its own transaction")
        await self.session.execute(
            insert(TenantRow).values(id=tenant.id, display_name=tenant.display_name, create_time=tenant.create_time)
        )

    async def add_key(self, key: ApiKey) -> None:
        if key.tenant_id != self.tenant_id:
            raise ValueError("a key is added in its own tenant's transaction")
        await self.session.execute(
            insert(ApiKeyRow).values(
                id=key.id,
                tenant_id=self.tenant_id,
                display_name=key.display_name,
                prefix=key.prefix,
                digest=key.digest,
                scopes=_SCOPE_SEPARATOR.join(key.scopes),
                create_time=key.create_time,
                expire_time=key.expire_time,
                revoke_time=key.revoke_time,
            )
        )

    async def get_key(self, key_id: str) -> ApiKey | None:
        query = select(ApiKeyRow).where(ApiKeyRow.tenant_id == self.tenant_id, ApiKeyRow.id == key_id)
        row = (await self.session.scalars(query)).one_or_none()
        return _key_of(row) if row is not None else None

    async def page_keys(self, after_id: str | None, limit: int) -> list[ApiKey]:
        """The tenant's keys oldest first, after `after_id`."""
        query = select(ApiKeyRow).where(ApiKeyRow.tenant_id == self.tenant_id).order_by(ApiKeyRow.id).limit(limit)
        if after_id is not None:
            query = query.where(ApiKeyRow.id > after_id)
        return [_key_of(row) for row in await self.session.scalars(query)]

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revokes the key as of `at`, or keeps the time of an earlier revocation; the key as
        stored afterwards, or None when the tenant has no such key. One statement, so two
        concurrent revocations agree on the time."""
        row = (
            await self.session.scalars(
                update(ApiKeyRow)
                .where(ApiKeyRow.tenant_id == self.tenant_id, ApiKeyRow.id == key_id)
                .values(revoke_time=func.coalesce(ApiKeyRow.revoke_time, literal(at, UtcDateTime)))
                .returning(ApiKeyRow)
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        return _key_of(row) if row is not None else None

    async def mark_rotated(self, key_id: str, successor_id: str, expire_time: datetime) -> ApiKey | None:
        """Links the key to its successor and makes it expire at `expire_time`, if it is still
        active and was not rotated before (one statement: of two concurrent rotations one
        wins); the key as stored afterwards, or None when it was not rotatable."""
        row = (
            await self.session.scalars(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.tenant_id == self.tenant_id,
                    ApiKeyRow.id == key_id,
                    ApiKeyRow.successor_id.is_(None),
                    ApiKeyRow.revoke_time.is_(None),
                )
                .values(successor_id=successor_id, expire_time=literal(expire_time, UtcDateTime))
                .returning(ApiKeyRow)
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        return _key_of(row) if row is not None else None


class LimitRepository(TenantRepository):
    """A tenant's rate limits and budgets, one of each per target at most."""

    async def rate_limits(self, after: str | None = None, limit: int | None = None) -> list[StoredRateLimit]:
        query = select(RateLimitRow).where(RateLimitRow.tenant_id == self.tenant_id).order_by(RateLimitRow.target)
        if after is not None:
            query = query.where(RateLimitRow.target > after)
        if limit is not None:
            query = query.limit(limit)
        return [_rate_limit_of(row) for row in await self.session.scalars(query)]

    async def budgets(self, after: str | None = None, limit: int | None = None) -> list[StoredBudget]:
        query = select(BudgetRow).where(BudgetRow.tenant_id == self.tenant_id).order_by(BudgetRow.target)
        if after is not None:
            query = query.where(BudgetRow.target > after)
        if limit is not None:
            query = query.limit(limit)
        return [_budget_of(row) for row in await self.session.scalars(query)]

    async def rate_limit(self, target: Target) -> StoredRateLimit | None:
        row = await self.session.get(RateLimitRow, (self.tenant_id, target.resource_id))
        return _rate_limit_of(row) if row is not None and row.tenant_id == self.tenant_id else None

    async def budget(self, target: Target) -> StoredBudget | None:
        row = await self.session.get(BudgetRow, (self.tenant_id, target.resource_id))
        return _budget_of(row) if row is not None and row.tenant_id == self.tenant_id else None

    async def save_rate_limit(self, config: RateLimitConfig, previous: StoredRateLimit | None, at: datetime) -> bool:
        """Inserts (no `previous`) or updates the limit if it is still at `previous`'s revision;
        False when another request got there first."""
        values = {
            "requests_per_minute": config.requests_per_minute,
            "tokens_per_minute": config.tokens_per_minute,
            "update_time": at,
        }
        if previous is None:
            row = {"tenant_id": self.tenant_id, "target": config.target.resource_id, "create_time": at, "revision": 1}
            return await insert_or_ignore(self.session, RateLimitRow, [row | values], ["tenant_id", "target"]) == 1
        result = await self.session.execute(
            update(RateLimitRow)
            .where(
                RateLimitRow.tenant_id == self.tenant_id,
                RateLimitRow.target == config.target.resource_id,
                RateLimitRow.revision == previous.revision,
            )
            .values(revision=previous.revision + 1, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def save_budget(self, config: BudgetConfig, previous: StoredBudget | None, at: datetime) -> bool:
        values = {
            "limit_micros": config.limit_micros,
            "period": config.period.value,
            "window_seconds": config.window_seconds,
            "update_time": at,
        }
        if previous is None:
            row = {"tenant_id": self.tenant_id, "target": config.target.resource_id, "create_time": at, "revision": 1}
            return await insert_or_ignore(self.session, BudgetRow, [row | values], ["tenant_id", "target"]) == 1
        result = await self.session.execute(
            update(BudgetRow)
            .where(
                BudgetRow.tenant_id == self.tenant_id,
                BudgetRow.target == config.target.resource_id,
                BudgetRow.revision == previous.revision,
            )
            .values(revision=previous.revision + 1, **values)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def delete_rate_limit(self, target: Target, revision: int | None) -> bool:
        query = delete(RateLimitRow).where(
            RateLimitRow.tenant_id == self.tenant_id, RateLimitRow.target == target.resource_id
        )
        if revision is not None:
            query = query.where(RateLimitRow.revision == revision)
        result = await self.session.execute(query.execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0))

    async def delete_budget(self, target: Target, revision: int | None) -> bool:
        query = delete(BudgetRow).where(BudgetRow.tenant_id == self.tenant_id, BudgetRow.target == target.resource_id)
        if revision is not None:
            query = query.where(BudgetRow.revision == revision)
        result = await self.session.execute(query.execution_options(synchronize_session=False))
        return bool(getattr(result, "rowcount", 0))
