"""Outbound calls between services: forward the caller's identity and request
id, and never outlive the caller's deadline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from vocalbridge_common import scopes
from vocalbridge_common.context import current_tenant_id, identity_token_var, identity_var, request_id_var
from vocalbridge_common.headers import IDENTITY_HEADER, REQUEST_ID_HEADER
from vocalbridge_common.identity import IdentitySigner

DEFAULT_TIMEOUT_SECONDS = 10.0


def forwarded_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata for a call made on behalf of the current caller."""
    metadata = []
    token = identity_token_var.get()
    if token:
        metadata.append((IDENTITY_HEADER, token))
    request_id = request_id_var.get()
    if request_id:
        metadata.append((REQUEST_ID_HEADER, request_id))
    return tuple(metadata)


def service_metadata(
    signer: IdentitySigner, service: str, extra_scopes: Iterable[str] = ()
) -> tuple[tuple[str, str], ...]:
    """Metadata for work a service does on its own behalf, not a caller's (the outbox relay,
    the price book refresh): a fresh identity with no tenant, the internal scope and only
    the `extra_scopes` that work needs."""
    return ((IDENTITY_HEADER, signer.mint("", f"svc_{service}", {scopes.INTERNAL, *extra_scopes})),)


def internal_metadata(signer: IdentitySigner) -> tuple[tuple[str, str], ...]:
    """Metadata for an internal RPC a service makes for the current caller (the voice
    service's spoken turns): a fresh identity with the caller's tenant, key id and scopes,
    plus the internal scope, and the caller's request id. Internal RPCs require that scope,
    which no API key carries (auth.Check and every service's interceptor refuse a tenant's
    key), so only a service holding the identity secret can make the call, and only for the
    tenant of the request it serves; what the callee does further (reading the agent) it does
    with the caller's own scopes."""
    tenant_id = current_tenant_id()
    identity = identity_var.get()
    assert identity is not None  # current_tenant_id() refused a call without one
    token = signer.mint(tenant_id, identity.key_id, {*identity.scopes, scopes.INTERNAL})
    metadata = [(IDENTITY_HEADER, token)]
    request_id = request_id_var.get()
    if request_id:
        metadata.append((REQUEST_ID_HEADER, request_id))
    return tuple(metadata)


def remaining_timeout(
    context: grpc.aio.ServicerContext[Any, Any] | None, default: float = DEFAULT_TIMEOUT_SECONDS
) -> float:
    """The time left of the caller's deadline (or `default` when it set none)."""
    if context is None:
        return default
    remaining = context.time_remaining()
    if remaining is None:
        return default
    return max(0.0, min(remaining, default))


def insecure_channel(target: str) -> grpc.aio.Channel:
    """A channel to another service inside the cluster (plaintext h2c, as Envoy uses).

    Round robin over every address the target resolves to: on Kubernetes the backend
    Services are headless (`dns:///agents.<ns>.svc.cluster.local:50052` gives one address
    per pod), so calls spread over the pods instead of sticking to one connection.

    Reconnects back off from 0.1 s to at most 1 s (gRPC's defaults are 1 s growing to 120 s): a
    peer that restarted is used again within a second, not after a back-off grown while it was down."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.enable_retries", 0),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ],
    )
