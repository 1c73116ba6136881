"""Per-request context (request id, identity), set by the server interceptor.

Context variables, not globals: each gRPC call runs in its own task and sees
its own values; outbound calls read them to forward identity and request id.
"""

from __future__ import annotations

import contextvars

from vocalbridge_common.errors import PermissionDenied, Unauthenticated
from vocalbridge_common.identity import Identity

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("vb_request_id", default=None)
identity_var: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("vb_identity", default=None)
# The raw signed header of the current call, forwarded as-is to other services.
identity_token_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("vb_identity_token", default=None)


def current_identity() -> Identity:
    identity = identity_var.get()
    if identity is None:
        raise Unauthenticated("no caller identity", reason="UNAUTHENTICATED")
    return identity


def current_tenant_id() -> str:
    """The caller's tenant; refuses identities that are not bound to one (the operator)."""
    identity = current_identity()
    if not identity.tenant_id:
        raise PermissionDenied("this key is not bound to a tenant; use a tenant's API key", reason="TENANT_REQUIRED")
    return identity.tenant_id
