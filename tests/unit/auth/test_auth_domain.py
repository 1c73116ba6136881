"""The auth domain without I/O: the secret format, what is stored of a key, the rule
that accepts or refuses a presented secret, and the validation of new keys."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocalbridge_auth.domain import (
    DEFAULT_KEY_SCOPES,
    ApiKey,
    authenticate,
    digest,
    issue_key,
    key_scopes,
    key_violations,
    parse_key_name,
    parse_tenant_name,
    prefix_of,
    tenant_violations,
)
from vocalbridge_common.errors import Unauthenticated
from vocalbridge_common.ids import new_id

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
SECRET_FORMAT = re.compile(r"^vb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$")


def issue(public_id: bytes = b"\x01\x02\x03\x04", private: bytes = b"p" * 32, **fields: object) -> tuple[ApiKey, str]:
    values: dict[str, object] = {
        "key_id": new_id("key"),
        "tenant_id": new_id("ten"),
        "display_name": "CI",
        "scope_names": ["read"],
        "create_time": NOW,
        "expire_time": None,
    }
    values.update(fields)
    issued = issue_key(public_id=public_id, private=private, **values)
    return issued.key, issued.secret


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=32, max_size=32))
def test_a_secret_has_the_documented_format_and_its_prefix_finds_the_key(public_id, private):
    key, secret = issue(public_id, private)
    assert SECRET_FORMAT.match(secret), secret
    assert key.prefix == f"vb_{public_id.hex()}" == prefix_of(secret)
    assert secret.startswith(key.prefix + "_")


def test_only_the_digest_of_the_secret_is_kept_with_the_key():
    key, secret = issue()
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(key)
    assert key.revoke_time is None and key.name == f"apiKeys/{key.id}"


def test_a_key_needs_its_full_randomness():
    with pytest.raises(ValueError):
        issue(public_id=b"\x01")
    with pytest.raises(ValueError):
        issue(private=b"short")


@pytest.mark.parametrize(
    "secret",
    ["", "vb_", "vb_0123abcd", "vb_0123abcd_", "vb_0123abcdX_rest", "xx_0123abcd_rest", "Bearer vb_0123abcd_rest"],
)
def test_malformed_secrets_have_no_prefix(secret):
    assert prefix_of(secret) is None


def test_authenticate_accepts_the_secret_of_a_live_key():
    key, secret = issue(expire_time=NOW + timedelta(seconds=1))
    assert authenticate(digest(secret), key, NOW) is key


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"revoke_time": NOW - timedelta(seconds=1)}, "API_KEY_REVOKED"),
        ({"expire_time": NOW}, "API_KEY_EXPIRED"),  # expiry is exclusive: at the instant it is over
        ({"expire_time": NOW - timedelta(days=1)}, "API_KEY_EXPIRED"),
        ({"digest": "0" * 64}, "API_KEY_INVALID"),
    ],
)
def test_authenticate_says_why_a_key_is_refused(change, reason):
    key, secret = issue()
    stored = ApiKey(**{**key.__dict__, **change})
    with pytest.raises(Unauthenticated) as caught:
        authenticate(digest(secret), stored, NOW)
    assert caught.value.reason == reason


def test_an_unknown_prefix_or_a_wrong_secret_is_just_invalid():
    key, secret = issue()
    for presented, found in ((secret, None), (secret[:-1] + ("A" if secret[-1] != "A" else "B"), key)):
        with pytest.raises(Unauthenticated) as caught:
            authenticate(digest(presented), found, NOW)
        assert caught.value.reason == "API_KEY_INVALID"
    # A revoked key presented with the wrong secret tells nothing about its state.
    revoked = ApiKey(**{**key.__dict__, "revoke_time": NOW})
    with pytest.raises(Unauthenticated) as caught:
        authenticate(digest(secret + "x"), revoked, NOW)
    assert caught.value.reason == "API_KEY_INVALID"


def test_new_key_scopes_default_and_are_normalised():
    assert key_scopes([]) == DEFAULT_KEY_SCOPES == ("write",)
    assert key_scopes(["write", "admin", "write"]) == ("admin", "write")


def test_new_key_violations_name_every_bad_field():
    violations = key_violations("k" * 101, ["read", "operator"], NOW, NOW)
    assert [v.field for v in violations] == ["api_key.display_name", "api_key.scopes", "api_key.expire_time"]
    assert key_violations("k", [], None, NOW) == []
    assert key_violations("k" * 100, ["admin"], NOW + timedelta(seconds=1), NOW) == []


@pytest.mark.parametrize("name", ["", " ", "   ", "\t", " padded ", "x" * 101, "tab\there"])
def test_key_display_names_are_required_and_validated(name):
    assert {v.field for v in key_violations(name, [], None, NOW)} == {"api_key.display_name"}


@pytest.mark.parametrize("name", ["", " padded ", "x" * 101, "tab\there"])
def test_tenant_display_names_are_validated(name):
    assert [v.field for v in tenant_violations(name)] == ["display_name"]


def test_resource_names():
    tenant_id, key_id = new_id("ten"), new_id("key")
    assert parse_tenant_name(f"tenants/{tenant_id}") == tenant_id
    assert parse_key_name(f"apiKeys/{key_id}") == key_id
    for bad in ("", tenant_id, f"apiKeys/{tenant_id}", f"tenants/{key_id}", "tenants/ten_x"):
        assert parse_tenant_name(bad) is None, bad
    for bad in ("", key_id, f"tenants/{key_id}", f"apiKeys/{tenant_id}", "apiKeys/key_x"):
        assert parse_key_name(bad) is None, bad
