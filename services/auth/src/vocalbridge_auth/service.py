"""Auth use cases. Each opens its own transaction; tenant-owned data is touched
only in the caller's tenant transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_auth import keys
from vocalbridge_auth.models import ApiKeyRow, TenantRow
from vocalbridge_auth.repository import ApiKeyRepository, TenantRepository
from vocalbridge_common import scopes
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import NotFound, invalid_fields
from vocalbridge_common.ids import new_id
from vocalbridge_common.pagination import PageTokenCodec, clamp_page_size
from vocalbridge_common.validation import Violations


class TenantNotFound(NotFound):
    default_reason = "TENANT_NOT_FOUND"

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} not found", metadata={"tenant": tenant_id})


class ApiKeyNotFound(NotFound):
    default_reason = "API_KEY_NOT_FOUND"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} not found", metadata={"apiKey": key_id})


@dataclass(frozen=True)
class CreatedKey:
    row: ApiKeyRow
    secret: str  # shown to the caller once, then forgotten


@dataclass(frozen=True)
class Page:
    items: list
    next_page_token: str


class AuthService:
    def __init__(self, db: Database, page_tokens: PageTokenCodec, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = db
        self._page_tokens = page_tokens
        self._clock = clock

    # -- tenants (operator) -------------------------------------------------

    async def create_tenant(self, display_name: str) -> tuple[TenantRow, CreatedKey]:
        violations = Violations()
        violations.display_name("display_name", display_name)
        if violations:
            raise invalid_fields(violations)
        now = self._clock()
        tenant = TenantRow(id=new_id("ten"), display_name=display_name, create_time=now)
        async with self._db.tenant_transaction(tenant.id) as session:
            await TenantRepository(session).add(tenant)
            created = await self._add_key(session, tenant.id, "Initial admin key", (scopes.ADMIN,), None, now)
        return tenant, created

    async def get_tenant(self, tenant_id: str | None) -> TenantRow:
        if tenant_id:
            async with self._db.system_transaction() as session:
                row = await TenantRepository(session).get(tenant_id)
            if row is not None:
                return row
        raise TenantNotFound(tenant_id or "")

    async def list_tenants(self, page_size: int, page_token: str) -> Page:
        limit = clamp_page_size(page_size)
        after = self._page_tokens.decode(page_token, "tenants")
        async with self._db.system_transaction() as session:
            rows = await TenantRepository(session).page(after, limit + 1)
        return self._page(rows, limit, "tenants")

    # -- API keys (tenant admin) --------------------------------------------

    async def create_api_key(
        self, tenant_id: str, display_name: str, scope_names: list[str], expire_time: datetime | None
    ) -> CreatedKey:
        now = self._clock()
        violations = Violations()
        violations.length("api_key.display_name", display_name, maximum=100)
        if not scope_names:
            scope_names = [scopes.WRITE]
        if any(name not in scopes.TENANT_SCOPES for name in scope_names):
            violations.add("api_key.scopes", "each scope must be SCOPE_READ, SCOPE_WRITE or SCOPE_ADMIN")
        if expire_time is not None and expire_time <= now:
            violations.add("api_key.expire_time", "must be in the future")
        if violations:
            raise invalid_fields(violations)
        async with self._db.tenant_transaction(tenant_id) as session:
            return await self._add_key(session, tenant_id, display_name, tuple(scope_names), expire_time, now)

    async def _add_key(self, session, tenant_id, display_name, scope_names, expire_time, now) -> CreatedKey:
        secret, prefix = keys.generate_secret()
        row = ApiKeyRow(
            id=new_id("key"),
            tenant_id=tenant_id,
            display_name=display_name,
            prefix=prefix,
            digest=keys.digest(secret),
            scopes=",".join(sorted(set(scope_names))),
            create_time=now,
            expire_time=expire_time,
            revoke_time=None,
        )
        await ApiKeyRepository(session).add(row)
        return CreatedKey(row=row, secret=secret)

    async def get_api_key(self, tenant_id: str, key_id: str | None) -> ApiKeyRow:
        if key_id:
            async with self._db.tenant_transaction(tenant_id) as session:
                row = await ApiKeyRepository(session).get(tenant_id, key_id)
            if row is not None:
                return row
        raise ApiKeyNotFound(key_id or "")

    async def key_expire_time(self, tenant_id: str, key_id: str) -> datetime | None:
        async with self._db.tenant_transaction(tenant_id) as session:
            row = await ApiKeyRepository(session).get(tenant_id, key_id)
        return row.expire_time if row is not None else None

    async def list_api_keys(self, tenant_id: str, page_size: int, page_token: str) -> Page:
        limit = clamp_page_size(page_size)
        after = self._page_tokens.decode(page_token, "apiKeys")
        async with self._db.tenant_transaction(tenant_id) as session:
            rows = await ApiKeyRepository(session).page(tenant_id, after, limit + 1)
        return self._page(rows, limit, "apiKeys")

    async def revoke_api_key(self, tenant_id: str, key_id: str | None) -> ApiKeyRow:
        async with self._db.tenant_transaction(tenant_id) as session:
            repository = ApiKeyRepository(session)
            row = await repository.get(tenant_id, key_id) if key_id else None
            if row is None:
                raise ApiKeyNotFound(key_id or "")
            if row.revoke_time is None:
                row.revoke_time = self._clock()
                await session.flush()
            return row

    async def find_key(self, prefix: str) -> ApiKeyRow | None:
        """The key with this public prefix, whatever its tenant (for Check)."""
        async with self._db.system_transaction() as session:
            return await ApiKeyRepository(session).find_by_prefix(prefix)

    def _page(self, rows: list, limit: int, query: str) -> Page:
        if len(rows) > limit:
            rows = rows[:limit]
            return Page(rows, self._page_tokens.encode(query, rows[-1].id))
        return Page(rows, "")
