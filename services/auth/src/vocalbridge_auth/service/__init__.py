"""Auth use cases. Each opens its own transaction: tenant-owned data only in the
transaction of the tenant it is given, the registry and the key lookup in a
system transaction. Domain values in and out; repositories never commit."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from vocalbridge_auth.domain import (
    DEFAULT_ROTATION_OVERLAP,
    INITIAL_KEY_NAME,
    INITIAL_KEY_SCOPES,
    KEY_ID_PREFIX,
    OPERATOR_KEY_ID,
    PRIVATE_BYTES,
    PUBLIC_ID_BYTES,
    TENANT_ID_PREFIX,
    ApiKey,
    ApiKeyNotFound,
    Caller,
    IssuedKey,
    NewTenant,
    Rotation,
    Tenant,
    TenantNotFound,
    issue_key,
    key_violations,
    overlap_violations,
    parse_key_name,
    parse_tenant_name,
    rotation_refusal,
    tenant_violations,
)
from vocalbridge_auth.domain.limits import ConcurrentChange, KeyNotRotatable
from vocalbridge_auth.repository import AccountRepository, KeyLookup, TenantRegistry
from vocalbridge_common.db import Database, utcnow
from vocalbridge_common.errors import invalid_fields
from vocalbridge_common.identity import Identity
from vocalbridge_common.ids import new_id
from vocalbridge_common.limits.model import Target
from vocalbridge_common.pagination import Page, Paginator

if TYPE_CHECKING:
    from vocalbridge_auth.service.limits import LimitService


class AuthService:
    def __init__(
        self,
        db: Database,
        paginator: Paginator,
        *,
        clock: Callable[[], datetime] = utcnow,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        rotation_overlap: timedelta = DEFAULT_ROTATION_OVERLAP,
        limits: LimitService | None = None,
        on_key_changed: Callable[[str], None] | None = None,
    ) -> None:
        self._db = db
        # Told the public prefix of a key just revoked or rotated, so that this process's key
        # cache (Check's) forgets it at once instead of within its TTL.
        self._on_key_changed = on_key_changed
        self._paginator = paginator
        self._rotation_overlap = rotation_overlap
        self._limits = limits
        self._clock = clock
        self._random_bytes = random_bytes

    # -- tenants (the operator) ---------------------------------------------------

    async def create_tenant(self, display_name: str) -> NewTenant:
        """A tenant and its first key, which can manage the others; both or neither."""
        violations = tenant_violations(display_name)
        if violations:
            raise invalid_fields(violations)
        now = self._clock()
        tenant = Tenant(id=new_id(TENANT_ID_PREFIX), display_name=display_name, create_time=now)
        first_key = self._issue(tenant.id, INITIAL_KEY_NAME, INITIAL_KEY_SCOPES, None, now)
        async with self._db.tenant_transaction(tenant.id) as session:
            account = AccountRepository(session, tenant.id)
            await account.add_tenant(tenant)
            await account.add_key(first_key.key)
        return NewTenant(tenant=tenant, first_key=first_key)

    async def get_tenant(self, name: str) -> Tenant:
        tenant_id = parse_tenant_name(name)
        if tenant_id:
            async with self._db.system_transaction() as session:
                tenant = await TenantRegistry(session).get(tenant_id)
            if tenant is not None:
                return tenant
        raise TenantNotFound(tenant_id or "")

    async def list_tenants(self, page_size: int, page_token: str) -> Page[Tenant]:
        request = self._paginator.request("tenants", page_size, page_token)
        async with self._db.system_transaction() as session:
            tenants = await TenantRegistry(session).page(request.after_str(), request.fetch)
        return self._paginator.page(request, tenants, key=lambda tenant: tenant.id)

    # -- API keys (a tenant's admin) ----------------------------------------------

    async def create_api_key(
        self, tenant_id: str, display_name: str, scope_names: Sequence[str], expire_time: datetime | None
    ) -> IssuedKey:
        now = self._clock()
        violations = key_violations(display_name, scope_names, expire_time, now)
        if violations:
            raise invalid_fields(violations)
        issued = self._issue(tenant_id, display_name, scope_names, expire_time, now)
        async with self._db.tenant_transaction(tenant_id) as session:
            await AccountRepository(session, tenant_id).add_key(issued.key)
        return issued

    async def get_api_key(self, tenant_id: str, name: str) -> ApiKey:
        key_id = parse_key_name(name)
        if key_id:
            async with self._db.tenant_transaction(tenant_id) as session:
                key = await AccountRepository(session, tenant_id).get_key(key_id)
            if key is not None:
                return key
        raise ApiKeyNotFound(key_id or "")

    async def list_api_keys(self, tenant_id: str, page_size: int, page_token: str) -> Page[ApiKey]:
        # The tenant is part of the query: a token is useless to another tenant.
        request = self._paginator.request(f"apiKeys/{tenant_id}", page_size, page_token)
        async with self._db.tenant_transaction(tenant_id) as session:
            keys = await AccountRepository(session, tenant_id).page_keys(request.after_str(), request.fetch)
        return self._paginator.page(request, keys, key=lambda key: key.id)

    async def revoke_api_key(self, tenant_id: str, name: str) -> ApiKey:
        """Revoking a revoked key changes nothing and returns it as it is."""
        key_id = parse_key_name(name)
        if key_id:
            async with self._db.tenant_transaction(tenant_id) as session:
                key = await AccountRepository(session, tenant_id).revoke_key(key_id, self._clock())
            if key is not None:
                self._key_changed(key)
                return key
        raise ApiKeyNotFound(key_id or "")

    async def rotate_api_key(self, tenant_id: str, name: str, overlap: timedelta | None) -> Rotation:
        """A successor with the same name, scopes and expiry; the old key expires after the
        overlap. Of two concurrent rotations of one key, one succeeds and the other changes
        nothing (its successor is rolled back with its transaction)."""
        violations = overlap_violations(overlap)
        if violations:
            raise invalid_fields(violations)
        key_id = parse_key_name(name)
        if not key_id:
            raise ApiKeyNotFound("")
        now = self._clock()
        async with self._db.tenant_transaction(tenant_id) as session:
            account = AccountRepository(session, tenant_id)
            key = await account.get_key(key_id)
            if key is None:
                raise ApiKeyNotFound(key_id)
            refusal = rotation_refusal(key, now)
            if refusal is not None:
                raise KeyNotRotatable(key.name, *refusal)
            successor = self._issue(tenant_id, key.display_name, key.scopes, key.expire_time, now)
            await account.add_key(successor.key)
            ends = now + (self._rotation_overlap if overlap is None else overlap)
            expiry = min(ends, key.expire_time) if key.expire_time is not None else ends
            rotated = await account.mark_rotated(key_id, successor.key.id, expiry)
            if rotated is None:
                raise ConcurrentChange(key.name)
            if self._limits is not None:
                await self._limits.copy_limits(session, tenant_id, Target.key(key_id), Target.key(successor.key.id))
        self._key_changed(rotated)
        return Rotation(successor=successor, rotated=rotated)

    def _key_changed(self, key: ApiKey) -> None:
        if self._on_key_changed is not None:
            self._on_key_changed(key.prefix)

    async def record_last_use(self, used: Mapping[str, datetime]) -> None:
        """Writes keys' last-use times (the background flush of LastUseRecorder)."""
        async with self._db.system_transaction() as session:
            await KeyLookup(session).record_last_use(used)

    # -- callers --------------------------------------------------------------------

    async def describe_caller(self, identity: Identity) -> Caller:
        """The verified identity, with its key's expiry when it is a tenant's stored key."""
        expire_time = None
        if identity.tenant_id and identity.key_id != OPERATOR_KEY_ID:
            async with self._db.tenant_transaction(identity.tenant_id) as session:
                key = await AccountRepository(session, identity.tenant_id).get_key(identity.key_id)
            expire_time = key.expire_time if key is not None else None
        return Caller(
            tenant_id=identity.tenant_id, key_id=identity.key_id, scopes=identity.scopes, expire_time=expire_time
        )

    async def find_key(self, prefix: str) -> ApiKey | None:
        """The key with this public prefix, whatever its tenant (for Envoy's Check)."""
        async with self._db.system_transaction() as session:
            return await KeyLookup(session).find_by_prefix(prefix)

    def _issue(
        self,
        tenant_id: str,
        display_name: str,
        scope_names: Sequence[str],
        expire_time: datetime | None,
        now: datetime,
    ) -> IssuedKey:
        return issue_key(
            key_id=new_id(KEY_ID_PREFIX),
            tenant_id=tenant_id,
            display_name=display_name,
            scope_names=scope_names,
            create_time=now,
            expire_time=expire_time,
            public_id=self._random_bytes(PUBLIC_ID_BYTES),
            private=self._random_bytes(PRIVATE_BYTES),
        )
