"""Check's key authenticator with a fake key store and fake clocks: the operator key,
the short-lived lookup cache, and revocation honoured once the cache entry is stale."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vocalbridge_auth.check import KeyAuthenticator, presented_secret
from vocalbridge_auth.domain import OPERATOR_KEY_ID, ApiKey, digest, issue_key
from vocalbridge_common.errors import Unauthenticated
from vocalbridge_common.ids import new_id

TTL = 5.0
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
OPERATOR_SECRET = "operator-secret-for-unit-tests-0123"


class FakeKeys:
    """The auth service's key lookup, counting how often Check asks it."""

    def __init__(self) -> None:
        self.by_prefix: dict[str, ApiKey] = {}
        self.lookups: list[str] = []

    async def find_key(self, prefix: str) -> ApiKey | None:
        self.lookups.append(prefix)
        return self.by_prefix.get(prefix)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup():
    keys, monotonic = FakeKeys(), FakeMonotonic()
    authenticator = KeyAuthenticator(keys, digest(OPERATOR_SECRET), TTL, monotonic=monotonic, clock=lambda: NOW)
    issued = issue_key(
        key_id=new_id("key"),
        tenant_id=new_id("ten"),
        display_name="",
        scope_names=["read", "write"],
        create_time=NOW,
        expire_time=None,
        public_id=b"\x0a\x0b\x0c\x0d",
        private=b"s" * 32,
    )
    keys.by_prefix[issued.key.prefix] = issued.key
    return authenticator, keys, monotonic, issued.key, issued.secret


async def test_a_tenant_key_becomes_its_principal(setup):
    authenticator, _, _, key, secret = setup
    principal = await authenticator.authenticate(secret)
    assert (principal.tenant_id, principal.key_id, principal.scopes) == (key.tenant_id, key.id, {"read", "write"})


async def test_the_operator_key_needs_no_lookup_and_belongs_to_no_tenant(setup):
    authenticator, keys, *_ = setup
    principal = await authenticator.authenticate(OPERATOR_SECRET)
    assert (principal.tenant_id, principal.key_id, principal.scopes) == ("", OPERATOR_KEY_ID, {"operator"})
    assert keys.lookups == []


@pytest.mark.parametrize(
    "secret, reason", [(None, "API_KEY_MISSING"), ("", "API_KEY_MISSING"), ("nope", "API_KEY_INVALID")]
)
async def test_missing_and_malformed_secrets_are_refused_without_a_lookup(setup, secret, reason):
    authenticator, keys, *_ = setup
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(secret)
    assert caught.value.reason == reason
    assert keys.lookups == []


async def test_lookups_are_cached_for_the_ttl_and_a_revocation_is_seen_after_it(setup):
    authenticator, keys, monotonic, key, secret = setup
    await authenticator.authenticate(secret)
    keys.by_prefix[key.prefix] = replace(key, revoke_time=NOW - timedelta(seconds=1))

    monotonic.now += TTL - 0.01
    await authenticator.authenticate(secret)  # still the cached, unrevoked key
    assert len(keys.lookups) == 1

    monotonic.now += 0.01
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(secret)
    assert caught.value.reason == "API_KEY_REVOKED"
    assert len(keys.lookups) == 2


async def test_an_unknown_prefix_is_cached_too(setup):
    authenticator, keys, _, _, secret = setup
    unknown = "vb_ffffffff_" + secret.split("_", 2)[2]
    for _ in range(3):
        with pytest.raises(Unauthenticated) as caught:
            await authenticator.authenticate(unknown)
        assert caught.value.reason == "API_KEY_INVALID"
    assert keys.lookups == ["vb_ffffffff"]


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"authorization": "Bearer vb_1"}, "vb_1"),
        ({"authorization": "bearer  vb_1 "}, "vb_1"),
        ({"x-api-key": " vb_2 "}, "vb_2"),
        ({"authorization": "Basic abc", "x-api-key": "vb_2"}, "vb_2"),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_presented_secret_reads_either_header(headers, expected):
    assert presented_secret(headers) == expected


async def test_a_forgotten_key_is_read_again_at_once(setup):
    """A key revoked through this process is forgotten: refused on its next use, not a TTL later
    (the control: one revoked in the store only stays allowed until its entry is stale)."""
    authenticator, keys, _, key, secret = setup
    await authenticator.authenticate(secret)
    keys.by_prefix[key.prefix] = replace(key, revoke_time=NOW)
    assert (await authenticator.authenticate(secret)).key_id == key.id  # cached: the control
    authenticator.forget(key.prefix)
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(secret)
    assert caught.value.reason == "API_KEY_REVOKED"
    authenticator.forget("vb_unknown")  # forgetting a key never looked up is harmless
