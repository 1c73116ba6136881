"""The auth domain: tenants and API keys as values, their validation, the secret
format, and the rule that decides whether a presented secret is good now.
Pure: no I/O, no protobuf, no randomness (the service supplies random bytes).

An API-key secret is `vb_<8 hex public id>_<43 url-safe chars>`. The public
prefix (`vb_` + 8 hex) finds the key; the SHA-256 digest of the whole secret
proves possession. 256 bits of randomness make a slow hash unnecessary, and the
secret itself is never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from vocalbridge_common import scopes
from vocalbridge_common.errors import NotFound, Unauthenticated
from vocalbridge_common.ids import parse_resource_name
from vocalbridge_common.validation import Violations

TENANTS = "tenants"
TENANT_ID_PREFIX = "ten"
API_KEYS = "apiKeys"
KEY_ID_PREFIX = "key"

# The platform operator's key comes from configuration, not from the table; this is its key id.
OPERATOR_KEY_ID = "operator"

# Every tenant starts with one key that can manage the others.
INITIAL_KEY_NAME = "Initial admin key"
INITIAL_KEY_SCOPES = (scopes.ADMIN,)
# A key created without scopes may use the API but not manage keys.
DEFAULT_KEY_SCOPES = (scopes.WRITE,)

SECRET_SCHEME = "vb"
PUBLIC_ID_BYTES = 4
PRIVATE_BYTES = 32
_PREFIX_LENGTH = len(SECRET_SCHEME) + 1 + 2 * PUBLIC_ID_BYTES  # "vb_" + 8 hex characters


# -- values --------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    create_time: datetime

    @property
    def name(self) -> str:
        return f"{TENANTS}/{self.id}"


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its public prefix and the digest of its secret, never the secret."""

    id: str
    tenant_id: str
    display_name: str
    prefix: str
    digest: str
    scopes: tuple[str, ...]  # sorted, without repeats
    create_time: datetime
    expire_time: datetime | None
    revoke_time: datetime | None
    last_use_time: datetime | None = None
    successor_id: str | None = None  # the key that replaced this one by rotation

    @property
    def name(self) -> str:
        return f"{API_KEYS}/{self.id}"


@dataclass(frozen=True)
class IssuedKey:
    """A new key and its secret, which is shown to the caller once and then forgotten."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    first_key: IssuedKey


@dataclass(frozen=True)
class Caller:
    """Who a request acts for, as GetCallerIdentity reports it."""

    tenant_id: str  # empty for the operator
    key_id: str
    scopes: frozenset[str]
    expire_time: datetime | None


# -- errors --------------------------------------------------------------------


class TenantNotFound(NotFound):
    default_reason = "TENANT_NOT_FOUND"

    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"tenant {tenant_id!r} not found", metadata={"tenant": tenant_id})


class ApiKeyNotFound(NotFound):
    default_reason = "API_KEY_NOT_FOUND"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"API key {key_id!r} not found", metadata={"apiKey": key_id})


# -- names -----------------------------------------------------------------------


def parse_tenant_name(name: str) -> str | None:
    """The tenant id in `tenants/ten_…`, or None when `name` cannot name a tenant."""
    return parse_resource_name(name, TENANTS, TENANT_ID_PREFIX)


def parse_key_name(name: str) -> str | None:
    """The key id in `apiKeys/key_…`, or None when `name` cannot name a key."""
    return parse_resource_name(name, API_KEYS, KEY_ID_PREFIX)


# -- validation --------------------------------------------------------------------


def tenant_violations(display_name: str) -> Violations:
    violations = Violations()
    violations.display_name("display_name", display_name)
    return violations


def key_scopes(requested: Sequence[str]) -> tuple[str, ...]:
    """The scopes a new key gets: the default when none are asked for; sorted, without repeats."""
    return tuple(sorted(set(requested or DEFAULT_KEY_SCOPES)))


def key_violations(
    display_name: str, scope_names: Sequence[str], expire_time: datetime | None, now: datetime
) -> Violations:
    """Every problem with a requested key, with paths as the client sent them (`api_key.…`)."""
    violations = Violations()
    # Required, like a tenant's: a key listed without a name cannot be told apart from the
    # others when one has to be revoked.
    violations.display_name("api_key.display_name", display_name)
    if any(name not in scopes.TENANT_SCOPES for name in scope_names):
        violations.add("api_key.scopes", "each scope must be SCOPE_READ, SCOPE_WRITE or SCOPE_ADMIN")
    if expire_time is not None and expire_time <= now:
        violations.add("api_key.expire_time", "must be in the future")
    return violations


# -- rotation ------------------------------------------------------------------------

DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
MAX_ROTATION_OVERLAP = timedelta(days=30)


@dataclass(frozen=True)
class Rotation:
    """A rotated key (now expiring at the end of the overlap) and its successor."""

    successor: IssuedKey
    rotated: ApiKey


def overlap_violations(overlap: timedelta | None) -> Violations:
    violations = Violations()
    if overlap is not None and not timedelta(0) <= overlap <= MAX_ROTATION_OVERLAP:
        violations.add("overlap", f"must be from 0s to {int(MAX_ROTATION_OVERLAP.total_seconds())}s (30 days)")
    return violations


def rotation_refusal(key: ApiKey, now: datetime) -> tuple[str, str] | None:
    """Why `key` cannot be rotated now (what, reason), or None when it can."""
    if key.revoke_time is not None:
        return "it has been revoked", "API_KEY_REVOKED"
    if key.successor_id is not None:
        return f"it was rotated already (its successor is {API_KEYS}/{key.successor_id})", "API_KEY_ALREADY_ROTATED"
    if key.expire_time is not None and key.expire_time <= now:
        return "it has expired", "API_KEY_EXPIRED"
    return None


# -- secrets ---------------------------------------------------------------------


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def prefix_of(secret: str) -> str | None:
    """The public prefix of a well-formed secret, or None."""
    if len(secret) < _PREFIX_LENGTH + 2 or not secret.startswith(SECRET_SCHEME + "_") or secret[_PREFIX_LENGTH] != "_":
        return None
    return secret[:_PREFIX_LENGTH]


def issue_key(
    *,
    key_id: str,
    tenant_id: str,
    display_name: str,
    scope_names: Sequence[str],
    create_time: datetime,
    expire_time: datetime | None,
    public_id: bytes,
    private: bytes,
) -> IssuedKey:
    """A key whose secret is built from `public_id` (PUBLIC_ID_BYTES) and `private`
    (PRIVATE_BYTES) random bytes; only the prefix and the digest are kept with the key."""
    if len(public_id) != PUBLIC_ID_BYTES or len(private) != PRIVATE_BYTES:
        raise ValueError(f"a key needs {PUBLIC_ID_BYTES} public and {PRIVATE_BYTES} private random bytes")
    prefix = f"{SECRET_SCHEME}_{public_id.hex()}"
    secret = f"{prefix}_{base64.urlsafe_b64encode(private).rstrip(b'=').decode()}"
    key = ApiKey(
        id=key_id,
        tenant_id=tenant_id,
        display_name=display_name,
        prefix=prefix,
        digest=digest(secret),
        scopes=key_scopes(scope_names),
        create_time=create_time,
        expire_time=expire_time,
        revoke_time=None,
    )
    return IssuedKey(key=key, secret=secret)


def authenticate(presented_digest: str, key: ApiKey | None, now: datetime) -> ApiKey:
    """`key` (found by the secret's prefix, None if there was none) when the presented
    secret, whose `digest` is given, proves possession of it and it is usable at `now`;
    otherwise Unauthenticated, saying why."""
    if key is None or not hmac.compare_digest(presented_digest, key.digest):
        raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
    if key.revoke_time is not None:
        raise Unauthenticated("the API key has been revoked", reason="API_KEY_REVOKED")
    if key.expire_time is not None and key.expire_time <= now:
        raise Unauthenticated("the API key has expired", reason="API_KEY_EXPIRED")
    return key
