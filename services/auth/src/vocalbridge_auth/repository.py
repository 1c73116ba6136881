"""Auth data access: rows in, domain values out (the one place that maps them).
Never commits: the service layer owns transactions.

Who may see what is in the class name: the tenant registry and the key lookup by
prefix are cross-tenant (system transactions); a tenant's account, its API keys,
is read and written in that tenant's transaction, every query filtered on it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, literal, select, update

from vocalbridge_auth.domain import ApiKey, Tenant
from vocalbridge_auth.models import ApiKeyRow, TenantRow
from vocalbridge_common.db import UtcDateTime
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
