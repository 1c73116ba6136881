"""What the services that enforce limits on turns and speech read from the others: the
tenant's limits from auth (GetTenantLimits, with the service's own identity), and what a
budget window spent from billing's ledger (GetUsageSummary, as the caller)."""

from __future__ import annotations

import grpc

from vocalbridge.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from vocalbridge.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from vocalbridge_common.clients import forwarded_metadata, service_metadata
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.limits.model import Target, TargetKind, TenantLimits, Window
from vocalbridge_common.limits.protos import tenant_limits_from_proto
from vocalbridge_common.protoconv import to_timestamp

TIMEOUT_SECONDS = 2.0


class AuthLimits:
    """A tenant's limits as the auth service enforces them (the configured defaults included)."""

    def __init__(self, channel: grpc.aio.Channel, signer: IdentitySigner, service: str) -> None:
        self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        self._signer = signer
        self._service = service

    async def fetch(self, tenant_id: str) -> TenantLimits:
        response = await self._stub.GetTenantLimits(
            auth_service_pb2.GetTenantLimitsRequest(tenant=f"tenants/{tenant_id}"),
            metadata=service_metadata(self._signer, self._service),
            timeout=TIMEOUT_SECONDS,
        )
        return tenant_limits_from_proto(tenant_id, response)


class LedgerSpent:
    """What billing's ledger holds for a budget's target in a window. The ledger knows the
    tenant and the agent of every event, not the API key: a key's window is seeded with 0
    (after the counters were lost, a key budget counts afresh; the tenant's still holds)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = billing_service_pb2_grpc.BillingServiceStub(channel)

    async def spent(self, tenant_id: str, target: Target, window: Window) -> int:
        if target.kind is TargetKind.KEY:
            return 0
        request = billing_service_pb2.GetUsageSummaryRequest(
            start_time=to_timestamp(window.start), end_time=to_timestamp(window.end)
        )
        if target.kind is TargetKind.AGENT:
            request.agent = target.name
        response = await self._stub.GetUsageSummary(request, metadata=forwarded_metadata(), timeout=TIMEOUT_SECONDS)
        return int(response.totals.cost_micros)
