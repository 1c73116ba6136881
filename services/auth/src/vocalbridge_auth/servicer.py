"""AuthService over gRPC: protobuf ⇄ domain, nothing else."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import empty_pb2
from grpc.aio import ServicerContext

from vocalbridge.auth.v1 import api_key_pb2, auth_service_pb2_grpc, budget_pb2, rate_limit_pb2, tenant_pb2
from vocalbridge.auth.v1 import auth_service_pb2 as pb
from vocalbridge_auth.domain import API_KEYS, TENANTS, ApiKey, Caller, Tenant, TenantNotFound, parse_tenant_name
from vocalbridge_auth.domain.limits import BudgetPatch, RateLimitPatch
from vocalbridge_auth.service import AuthService
from vocalbridge_auth.service.limits import BudgetView, LimitService, RateLimitView
from vocalbridge_common import scopes
from vocalbridge_common.context import current_identity, current_tenant_id
from vocalbridge_common.limits.protos import (
    PROTO_TO_PERIOD,
    budget_config_to_proto,
    rate_limit_config_to_proto,
    tenant_limits_to_proto,
)
from vocalbridge_common.protoconv import from_timestamp, to_timestamp

SCOPE_TO_PROTO = {
    scopes.READ: api_key_pb2.SCOPE_READ,
    scopes.WRITE: api_key_pb2.SCOPE_WRITE,
    scopes.ADMIN: api_key_pb2.SCOPE_ADMIN,
    scopes.OPERATOR: api_key_pb2.SCOPE_OPERATOR,
}
PROTO_TO_SCOPE = {value: name for name, value in SCOPE_TO_PROTO.items()}
# A scope the client sent that has no name here; the service refuses it with a field violation.
UNKNOWN_SCOPE = "unspecified"


def tenant_to_proto(tenant: Tenant) -> tenant_pb2.Tenant:
    return tenant_pb2.Tenant(
        name=tenant.name, display_name=tenant.display_name, create_time=to_timestamp(tenant.create_time)
    )


def api_key_to_proto(key: ApiKey, secret: str = "") -> api_key_pb2.ApiKey:
    return api_key_pb2.ApiKey(
        name=key.name,
        display_name=key.display_name,
        prefix=key.prefix,
        scopes=[SCOPE_TO_PROTO[s] for s in key.scopes],
        secret=secret,
        create_time=to_timestamp(key.create_time),
        expire_time=to_timestamp(key.expire_time),
        revoke_time=to_timestamp(key.revoke_time),
        last_use_time=to_timestamp(key.last_use_time),
        successor=f"{API_KEYS}/{key.successor_id}" if key.successor_id else "",
    )


def rate_limit_to_proto(view: RateLimitView) -> rate_limit_pb2.RateLimit:
    stored = view.stored
    message = rate_limit_config_to_proto(stored.config)
    message.create_time.FromDatetime(stored.create_time)
    message.update_time.FromDatetime(stored.update_time)
    message.etag = stored.etag
    if view.at is not None:
        resets = [s.reset_ms for s in (view.requests, view.tokens) if s is not None]
        message.usage.requests_remaining = max(0, view.requests.remaining) if view.requests else 0
        message.usage.tokens_remaining = view.tokens.remaining if view.tokens else 0
        message.usage.reset_time.FromDatetime(view.at + timedelta(milliseconds=max(resets, default=0)))
    return message


def budget_to_proto(view: BudgetView) -> budget_pb2.Budget:
    stored = view.stored
    message = budget_config_to_proto(stored.config)
    message.create_time.FromDatetime(stored.create_time)
    message.update_time.FromDatetime(stored.update_time)
    message.etag = stored.etag
    if view.state is not None and view.window_start is not None and view.window_end is not None:
        usage = message.usage
        usage.window_start_time.FromDatetime(view.window_start)
        usage.window_end_time.FromDatetime(view.window_end)
        usage.spent_micros = view.state.spent
        usage.reserved_micros = view.state.reserved
        usage.remaining_micros = max(0, stored.config.limit_micros - view.state.spent - view.state.reserved)
    return message


def rate_limit_patch(message: rate_limit_pb2.RateLimit) -> RateLimitPatch:
    return RateLimitPatch(
        message.requests_per_minute if message.HasField("requests_per_minute") else None,
        message.tokens_per_minute if message.HasField("tokens_per_minute") else None,
    )


def budget_patch(message: budget_pb2.Budget) -> BudgetPatch:
    window = message.window_duration if message.HasField("window_duration") else None
    return BudgetPatch(
        limit_micros=message.limit_micros if message.limit_micros else None,
        period=PROTO_TO_PERIOD.get(message.period),
        window_seconds=window.seconds if window is not None and not window.nanos else None,
        window_has_fraction=window is not None and bool(window.nanos),
        period_unknown=message.period != budget_pb2.BUDGET_PERIOD_UNSPECIFIED and message.period not in PROTO_TO_PERIOD,
    )


def caller_to_proto(caller: Caller) -> api_key_pb2.CallerIdentity:
    message = api_key_pb2.CallerIdentity(
        api_key=f"{API_KEYS}/{caller.key_id}",
        scopes=sorted(SCOPE_TO_PROTO[s] for s in caller.scopes if s in SCOPE_TO_PROTO),
        expire_time=to_timestamp(caller.expire_time),
    )
    if caller.tenant_id:
        message.tenant = f"{TENANTS}/{caller.tenant_id}"
    return message


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    """Operator RPCs act on the registry; the others on the caller's own tenant, taken
    from the verified identity and passed to the use case."""

    def __init__(self, service: AuthService, limits: LimitService) -> None:
        self._service = service
        self._limits = limits

    async def CreateTenant(
        self,
        request: pb.CreateTenantRequest,
        context: ServicerContext[pb.CreateTenantRequest, pb.CreateTenantResponse],
    ) -> pb.CreateTenantResponse:
        created = await self._service.create_tenant(request.display_name)
        return pb.CreateTenantResponse(
            tenant=tenant_to_proto(created.tenant),
            api_key=api_key_to_proto(created.first_key.key, created.first_key.secret),
        )

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: ServicerContext[pb.GetTenantRequest, tenant_pb2.Tenant]
    ) -> tenant_pb2.Tenant:
        return tenant_to_proto(await self._service.get_tenant(request.name))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: ServicerContext[pb.ListTenantsRequest, pb.ListTenantsResponse]
    ) -> pb.ListTenantsResponse:
        page = await self._service.list_tenants(request.page_size, request.page_token)
        return pb.ListTenantsResponse(
            tenants=[tenant_to_proto(tenant) for tenant in page.items], next_page_token=page.next_page_token
        )

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: ServicerContext[pb.CreateApiKeyRequest, api_key_pb2.ApiKey]
    ) -> api_key_pb2.ApiKey:
        key = request.api_key
        issued = await self._service.create_api_key(
            current_tenant_id(),
            key.display_name,
            [PROTO_TO_SCOPE.get(s, UNKNOWN_SCOPE) for s in key.scopes],
            from_timestamp(key, "expire_time"),
        )
        return api_key_to_proto(issued.key, issued.secret)

    async def GetApiKey(
        self, request: pb.GetApiKeyRequest, context: ServicerContext[pb.GetApiKeyRequest, api_key_pb2.ApiKey]
    ) -> api_key_pb2.ApiKey:
        return api_key_to_proto(await self._service.get_api_key(current_tenant_id(), request.name))

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: ServicerContext[pb.ListApiKeysRequest, pb.ListApiKeysResponse]
    ) -> pb.ListApiKeysResponse:
        page = await self._service.list_api_keys(current_tenant_id(), request.page_size, request.page_token)
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(key) for key in page.items], next_page_token=page.next_page_token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: ServicerContext[pb.RevokeApiKeyRequest, api_key_pb2.ApiKey]
    ) -> api_key_pb2.ApiKey:
        return api_key_to_proto(await self._service.revoke_api_key(current_tenant_id(), request.name))

    async def GetCallerIdentity(
        self,
        request: pb.GetCallerIdentityRequest,
        context: ServicerContext[pb.GetCallerIdentityRequest, api_key_pb2.CallerIdentity],
    ) -> api_key_pb2.CallerIdentity:
        return caller_to_proto(await self._service.describe_caller(current_identity()))

    async def RotateApiKey(
        self,
        request: pb.RotateApiKeyRequest,
        context: ServicerContext[pb.RotateApiKeyRequest, pb.RotateApiKeyResponse],
    ) -> pb.RotateApiKeyResponse:
        overlap = request.overlap.ToTimedelta() if request.HasField("overlap") else None
        rotation = await self._service.rotate_api_key(current_tenant_id(), request.name, overlap)
        return pb.RotateApiKeyResponse(
            api_key=api_key_to_proto(rotation.successor.key, rotation.successor.secret),
            rotated_api_key=api_key_to_proto(rotation.rotated),
        )

    async def GetRateLimit(
        self,
        request: pb.GetRateLimitRequest,
        context: ServicerContext[pb.GetRateLimitRequest, rate_limit_pb2.RateLimit],
    ) -> rate_limit_pb2.RateLimit:
        return rate_limit_to_proto(await self._limits.get_rate_limit(current_tenant_id(), request.name))

    async def ListRateLimits(
        self,
        request: pb.ListRateLimitsRequest,
        context: ServicerContext[pb.ListRateLimitsRequest, pb.ListRateLimitsResponse],
    ) -> pb.ListRateLimitsResponse:
        page = await self._limits.list_rate_limits(current_tenant_id(), request.page_size, request.page_token)
        return pb.ListRateLimitsResponse(
            rate_limits=[rate_limit_to_proto(view) for view in page.items], next_page_token=page.next_page_token
        )

    async def UpdateRateLimit(
        self,
        request: pb.UpdateRateLimitRequest,
        context: ServicerContext[pb.UpdateRateLimitRequest, rate_limit_pb2.RateLimit],
    ) -> rate_limit_pb2.RateLimit:
        view = await self._limits.update_rate_limit(
            current_tenant_id(),
            request.rate_limit.name,
            rate_limit_patch(request.rate_limit),
            list(request.update_mask.paths),
            request.rate_limit.etag,
            request.allow_missing,
        )
        return rate_limit_to_proto(view)

    async def DeleteRateLimit(
        self, request: pb.DeleteRateLimitRequest, context: ServicerContext[pb.DeleteRateLimitRequest, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        await self._limits.delete_rate_limit(current_tenant_id(), request.name, request.etag)
        return empty_pb2.Empty()

    async def GetBudget(
        self, request: pb.GetBudgetRequest, context: ServicerContext[pb.GetBudgetRequest, budget_pb2.Budget]
    ) -> budget_pb2.Budget:
        return budget_to_proto(await self._limits.get_budget(current_tenant_id(), request.name))

    async def ListBudgets(
        self, request: pb.ListBudgetsRequest, context: ServicerContext[pb.ListBudgetsRequest, pb.ListBudgetsResponse]
    ) -> pb.ListBudgetsResponse:
        page = await self._limits.list_budgets(current_tenant_id(), request.page_size, request.page_token)
        return pb.ListBudgetsResponse(
            budgets=[budget_to_proto(view) for view in page.items], next_page_token=page.next_page_token
        )

    async def UpdateBudget(
        self, request: pb.UpdateBudgetRequest, context: ServicerContext[pb.UpdateBudgetRequest, budget_pb2.Budget]
    ) -> budget_pb2.Budget:
        view = await self._limits.update_budget(
            current_tenant_id(),
            request.budget.name,
            budget_patch(request.budget),
            list(request.update_mask.paths),
            request.budget.etag,
            request.allow_missing,
        )
        return budget_to_proto(view)

    async def DeleteBudget(
        self, request: pb.DeleteBudgetRequest, context: ServicerContext[pb.DeleteBudgetRequest, empty_pb2.Empty]
    ) -> empty_pb2.Empty:
        await self._limits.delete_budget(current_tenant_id(), request.name, request.etag)
        return empty_pb2.Empty()

    async def GetTenantLimits(
        self, request: pb.GetTenantLimitsRequest, context: ServicerContext[pb.GetTenantLimitsRequest, pb.TenantLimits]
    ) -> pb.TenantLimits:
        tenant_id = parse_tenant_name(request.tenant)
        if not tenant_id:
            raise TenantNotFound(request.tenant)
        return tenant_limits_to_proto(await self._limits.cache.get(tenant_id))
