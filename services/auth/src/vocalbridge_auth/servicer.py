"""AuthService RPCs: protobuf ⇄ service layer, nothing else."""

from __future__ import annotations

from vocalbridge.auth.v1 import api_key_pb2, auth_service_pb2, auth_service_pb2_grpc, tenant_pb2
from vocalbridge_auth.check import OPERATOR_KEY_ID
from vocalbridge_auth.models import ApiKeyRow, TenantRow
from vocalbridge_auth.service import AuthService
from vocalbridge_common import scopes
from vocalbridge_common.context import current_identity, current_tenant_id
from vocalbridge_common.ids import parse_resource_name
from vocalbridge_common.protoconv import from_timestamp, to_timestamp

SCOPE_TO_PROTO = {
    scopes.READ: api_key_pb2.SCOPE_READ,
    scopes.WRITE: api_key_pb2.SCOPE_WRITE,
    scopes.ADMIN: api_key_pb2.SCOPE_ADMIN,
    scopes.OPERATOR: api_key_pb2.SCOPE_OPERATOR,
}
PROTO_TO_SCOPE = {value: name for name, value in SCOPE_TO_PROTO.items()}


def tenant_to_proto(row: TenantRow) -> tenant_pb2.Tenant:
    return tenant_pb2.Tenant(
        name=f"tenants/{row.id}", display_name=row.display_name, create_time=to_timestamp(row.create_time)
    )


def api_key_to_proto(row: ApiKeyRow, secret: str = "") -> api_key_pb2.ApiKey:
    return api_key_pb2.ApiKey(
        name=f"apiKeys/{row.id}",
        display_name=row.display_name,
        prefix=row.prefix,
        scopes=[SCOPE_TO_PROTO[s] for s in row.scopes.split(",")],
        secret=secret,
        create_time=to_timestamp(row.create_time),
        expire_time=to_timestamp(row.expire_time),
        revoke_time=to_timestamp(row.revoke_time),
    )


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, service: AuthService) -> None:
        self._service = service

    async def CreateTenant(self, request, context):
        tenant, key = await self._service.create_tenant(request.display_name)
        return auth_service_pb2.CreateTenantResponse(
            tenant=tenant_to_proto(tenant), api_key=api_key_to_proto(key.row, key.secret)
        )

    async def GetTenant(self, request, context):
        return tenant_to_proto(await self._service.get_tenant(parse_resource_name(request.name, "tenants", "ten")))

    async def ListTenants(self, request, context):
        page = await self._service.list_tenants(request.page_size, request.page_token)
        return auth_service_pb2.ListTenantsResponse(
            tenants=[tenant_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def CreateApiKey(self, request, context):
        key = request.api_key
        created = await self._service.create_api_key(
            current_tenant_id(),
            key.display_name,
            [PROTO_TO_SCOPE.get(s, "unspecified") for s in key.scopes],
            from_timestamp(key, "expire_time"),
        )
        return api_key_to_proto(created.row, created.secret)

    async def GetApiKey(self, request, context):
        key_id = parse_resource_name(request.name, "apiKeys", "key")
        return api_key_to_proto(await self._service.get_api_key(current_tenant_id(), key_id))

    async def ListApiKeys(self, request, context):
        page = await self._service.list_api_keys(current_tenant_id(), request.page_size, request.page_token)
        return auth_service_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(row) for row in page.items], next_page_token=page.next_page_token
        )

    async def RevokeApiKey(self, request, context):
        key_id = parse_resource_name(request.name, "apiKeys", "key")
        return api_key_to_proto(await self._service.revoke_api_key(current_tenant_id(), key_id))

    async def GetCallerIdentity(self, request, context):
        identity = current_identity()
        caller = api_key_pb2.CallerIdentity(
            api_key=f"apiKeys/{identity.key_id}",
            scopes=sorted(SCOPE_TO_PROTO[s] for s in identity.scopes if s in SCOPE_TO_PROTO),
        )
        if identity.tenant_id:
            caller.tenant = f"tenants/{identity.tenant_id}"
        if identity.key_id != OPERATOR_KEY_ID and identity.tenant_id:
            expire_time = await self._service.key_expire_time(identity.tenant_id, identity.key_id)
            if expire_time is not None:
                caller.expire_time.CopyFrom(to_timestamp(expire_time))
        return caller
