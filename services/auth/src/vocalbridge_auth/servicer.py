"""AuthService over gRPC: protobuf ⇄ domain, nothing else."""

from __future__ import annotations

from grpc.aio import ServicerContext

from vocalbridge.auth.v1 import api_key_pb2, auth_service_pb2_grpc, tenant_pb2
from vocalbridge.auth.v1 import auth_service_pb2 as pb
from vocalbridge_auth.domain import API_KEYS, TENANTS, ApiKey, Caller, Tenant
from vocalbridge_auth.service import AuthService
from vocalbridge_common import scopes
from vocalbridge_common.context import current_identity, current_tenant_id
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

    def __init__(self, service: AuthService) -> None:
        self._service = service

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
