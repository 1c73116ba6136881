"""API-key scopes and the scope each RPC requires: one policy, enforced by the
auth service's Envoy Check and again by every service's interceptor.

Scopes nest: admin ⊃ write ⊃ read. `operator` is the platform operator's and
implies nothing about tenants; `internal` is the services' own identity for
background work (the billing outbox relay; with `read` added, the price book
refresh), which carries no tenant, so every tenant-scoped RPC still refuses it;
and, bound to a caller's tenant, what the voice service sends a spoken turn to
the conversation service with (clients.internal_metadata). No API key carries it.
"""

from __future__ import annotations

from collections.abc import Iterable

READ = "read"
WRITE = "write"
ADMIN = "admin"
OPERATOR = "operator"
INTERNAL = "internal"

TENANT_SCOPES = (READ, WRITE, ADMIN)

_IMPLIED = {
    ADMIN: {ADMIN, WRITE, READ},
    WRITE: {WRITE, READ},
    READ: {READ},
    OPERATOR: {OPERATOR},
    INTERNAL: {INTERNAL},
}

# Any authenticated caller may ask who it is.
ANY = "any"

_EXPLICIT = {
    "/vocalbridge.auth.v1.AuthService/CreateTenant": OPERATOR,
    "/vocalbridge.auth.v1.AuthService/GetTenant": OPERATOR,
    "/vocalbridge.auth.v1.AuthService/ListTenants": OPERATOR,
    "/vocalbridge.auth.v1.AuthService/CreateApiKey": ADMIN,
    "/vocalbridge.auth.v1.AuthService/GetApiKey": ADMIN,
    "/vocalbridge.auth.v1.AuthService/ListApiKeys": ADMIN,
    "/vocalbridge.auth.v1.AuthService/RevokeApiKey": ADMIN,
    "/vocalbridge.auth.v1.AuthService/RotateApiKey": ADMIN,
    # Any key of the tenant may read its limits and budgets (Get*/List*); only admins change them.
    "/vocalbridge.auth.v1.AuthService/UpdateRateLimit": ADMIN,
    "/vocalbridge.auth.v1.AuthService/DeleteRateLimit": ADMIN,
    "/vocalbridge.auth.v1.AuthService/UpdateBudget": ADMIN,
    "/vocalbridge.auth.v1.AuthService/DeleteBudget": ADMIN,
    # The services that enforce limits read them with their own identity.
    "/vocalbridge.auth.v1.AuthService/GetTenantLimits": INTERNAL,
    "/vocalbridge.auth.v1.AuthService/GetCallerIdentity": ANY,
    "/vocalbridge.billing.v1.BillingService/RecordUsage": INTERNAL,
    # The voice service's spoken turns, with an identity it mints for its caller's tenant.
    "/vocalbridge.conversation.v1.ConversationService/StreamVoiceTurn": INTERNAL,
}


def required_scope(full_method: str) -> str:
    """The scope `/pkg.Service/Method` requires: explicit, else Get*/List* read, else write."""
    explicit = _EXPLICIT.get(full_method)
    if explicit:
        return explicit
    method = full_method.rsplit("/", 1)[-1]
    return READ if method.startswith(("Get", "List")) else WRITE


def effective_scopes(granted: Iterable[str]) -> set[str]:
    effective: set[str] = set()
    for scope in granted:
        effective |= _IMPLIED.get(scope, set())
    return effective


def allows(granted: Iterable[str], full_method: str) -> bool:
    needed = required_scope(full_method)
    return needed == ANY or needed in effective_scopes(granted)
