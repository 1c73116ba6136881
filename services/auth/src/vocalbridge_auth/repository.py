"""Auth data access. Flushes, never commits: the service layer owns transactions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from vocalbridge_auth.models import ApiKeyRow, TenantRow


class TenantRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: TenantRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, tenant_id: str) -> TenantRow | None:
        return await self._session.get(TenantRow, tenant_id)

    async def page(self, after_id: str | None, limit: int) -> list[TenantRow]:
        query = select(TenantRow).order_by(TenantRow.id).limit(limit)
        if after_id:
            query = query.where(TenantRow.id > after_id)
        return list((await self._session.scalars(query)).all())


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: ApiKeyRow) -> None:
        self._session.add(row)
        await self._session.flush()

    async def get(self, tenant_id: str, key_id: str) -> ApiKeyRow | None:
        query = select(ApiKeyRow).where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.id == key_id)
        return (await self._session.scalars(query)).one_or_none()

    async def page(self, tenant_id: str, after_id: str | None, limit: int) -> list[ApiKeyRow]:
        query = select(ApiKeyRow).where(ApiKeyRow.tenant_id == tenant_id).order_by(ApiKeyRow.id).limit(limit)
        if after_id:
            query = query.where(ApiKeyRow.id > after_id)
        return list((await self._session.scalars(query)).all())

    async def find_by_prefix(self, prefix: str) -> ApiKeyRow | None:
        """Cross-tenant by nature (the tenant is what we are finding out); system transactions only."""
        return (await self._session.scalars(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix))).one_or_none()
