"""The auth use cases on the embedded default, SQLite, called directly: the tenant is an
argument, so they run without a request context; the repository's row mapping and its
one-statement revocation behave as on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vocalbridge_auth.domain import ApiKeyNotFound, TenantNotFound
from vocalbridge_auth.server import MIGRATIONS_DIR, SCHEMA
from vocalbridge_auth.service import AuthService
from vocalbridge_common.db import Database
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.identity import Identity
from vocalbridge_common.migrations import migrate
from vocalbridge_common.pagination import PageTokenCodec, Paginator


class SteppingClock:
    """A clock the test moves, so stored times can be compared exactly."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def auth(tmp_path):
    url = f"sqlite:///{tmp_path / 'auth.db'}"
    migrate(url, SCHEMA, MIGRATIONS_DIR)
    db = Database(url, SCHEMA)
    clock = SteppingClock()
    try:
        yield AuthService(db, Paginator(PageTokenCodec(b"s" * 32)), clock=clock), clock
    finally:
        await db.dispose()


async def test_tenant_and_key_lifecycle_on_sqlite(auth):
    service, clock = auth
    created = await service.create_tenant("Acme")
    tenant, first = created.tenant, created.first_key
    assert await service.get_tenant(tenant.name) == tenant
    assert first.key.scopes == ("admin",) and first.secret.startswith(first.key.prefix + "_")
    assert await service.find_key(first.key.prefix) == first.key

    expiry = clock.now + timedelta(days=1)
    second = await service.create_api_key(tenant.id, "CI", ["read"], expiry)
    stored = await service.get_api_key(tenant.id, second.key.name)
    assert stored == second.key and stored.expire_time == expiry

    clock.now += timedelta(minutes=1)
    revoked = await service.revoke_api_key(tenant.id, second.key.name)
    assert revoked.revoke_time == clock.now
    # Revoking again changes nothing: the first revocation's time stays.
    clock.now += timedelta(minutes=1)
    assert await service.revoke_api_key(tenant.id, second.key.name) == revoked

    caller = await service.describe_caller(Identity(tenant.id, second.key.id, frozenset({"read"}), 0))
    assert (caller.tenant_id, caller.expire_time) == (tenant.id, expiry)


async def test_keys_belong_to_the_tenant_given(auth):
    service, _ = auth
    mine = (await service.create_tenant("Mine")).tenant
    other = (await service.create_tenant("Other")).tenant
    key = (await service.create_api_key(mine.id, "mine", [], None)).key
    assert key.scopes == ("write",)
    for call in (service.get_api_key, service.revoke_api_key):
        with pytest.raises(ApiKeyNotFound):
            await call(other.id, key.name)
    assert len((await service.list_api_keys(other.id, 0, "")).items) == 1
    assert (await service.get_api_key(mine.id, key.name)).revoke_time is None


async def test_listing_pages_through_everything_once(auth):
    service, _ = auth
    tenant = (await service.create_tenant("Paged")).tenant
    for _ in range(4):
        await service.create_api_key(tenant.id, "k", [], None)
    seen, token = [], ""
    while True:
        page = await service.list_api_keys(tenant.id, 2, token)
        seen += [key.id for key in page.items]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5 and seen == sorted(seen)

    first = await service.list_api_keys(tenant.id, 1, "")
    other = (await service.create_tenant("Other")).tenant
    with pytest.raises(InvalidArgument) as caught:
        await service.list_api_keys(other.id, 1, first.next_page_token)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"

    tenants = await service.list_tenants(1, "")
    assert len(tenants.items) == 1 and tenants.next_page_token


@pytest.mark.parametrize("name", ["", "tenants/", "tenants/ten_x", "apiKeys/key_0123456789abcdefghjkmnpqrs"])
async def test_a_name_that_cannot_be_a_tenant_is_not_found(auth, name):
    service, _ = auth
    with pytest.raises(TenantNotFound):
        await service.get_tenant(name)
