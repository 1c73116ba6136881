"""Envoy's ext_authz Check: API key → signed identity header, or a JSON denial.

Envoy calls Check for every request, before transcoding. A gRPC call's path is
its method (`/vocalbridge.<svc>.v1.<Service>/<Method>`); a JSON request's HTTP
method and path are matched against the contracts' HTTP rules, and its body
is validated strictly (see routes.py). Check finds the key by its public
prefix, compares digests, applies the method's required scope, and on success
sets the one identity header the services trust. Key lookups are cached for a
short TTL: a revoked key is refused at most that long after revocation (at once by the
process that revoked it). Before any of that, the request's headers are held to the edge's
limits (431) and a header that means one thing may not come twice (400).

Only the edge may ask: every call must carry the shared edge secret (EDGE_SECRET_HEADER, which
Envoy adds from its environment), or it is refused before anything is looked up, so a caller
who reaches the auth port cannot mint identities with a key. The identities minted here live
seconds (VB_IDENTITY_TTL_SECONDS): after a key is revoked, an identity minted for it is
refused by every service within the key cache TTL plus that lifetime. Check also tells the
edge's access log whose request it was (dynamic metadata: tenant, key).

A refused request of the OpenAI-compatible API (a JSON request on one of its routes) also
gets its error in OpenAI's shape, in the `x-vb-openai-error` header that the edge puts into
the body there, so OpenAI's SDKs raise their own exception types for 401, 403 and 429 too.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc.aio import ServicerContext

from vocalbridge_auth.domain import OPERATOR_KEY_ID, ApiKey, authenticate, digest, prefix_of
from vocalbridge_auth.last_use import LastUseRecorder
from vocalbridge_auth.routes import Route, RouteTable, binding_conflicts, parse_body
from vocalbridge_common import scopes as scope_policy
from vocalbridge_common.db import utcnow
from vocalbridge_common.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    invalid_fields,
    to_rpc_status,
)
from vocalbridge_common.headers import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    EDGE_SECRET_HEADER,
    IDEMPOTENCY_KEY_HEADER,
    IDENTITY_HEADER,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADER_COUNT,
    REQUEST_ID_HEADER,
    SESSION_HEADER,
)
from vocalbridge_common.identity import IdentitySigner
from vocalbridge_common.json_limits import JsonTooDeep
from vocalbridge_common.limits.cache import TenantLimitsCache
from vocalbridge_common.limits.limiter import Limiter
from vocalbridge_common.openai_errors import OPENAI_METHOD_PREFIX, openai_error_headers

log = logging.getLogger(__name__)

_MAX_CACHE_ENTRIES = 100_000


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scopes: frozenset[str]


_OPERATOR = Principal("", OPERATOR_KEY_ID, frozenset({scope_policy.OPERATOR}))


class KeyFinder(Protocol):
    """Where keys are found by their public prefix (the auth service)."""

    async def find_key(self, prefix: str) -> ApiKey | None: ...


@dataclass(frozen=True)
class _CachedKey:
    key: ApiKey | None
    fetched_at: float


class KeyAuthenticator:
    """Turns a presented secret into a Principal, or raises Unauthenticated."""

    def __init__(
        self,
        keys: KeyFinder,
        operator_key_digest: str,
        cache_ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._keys = keys
        self._operator_key_digest = operator_key_digest
        self._ttl = cache_ttl_seconds
        self._monotonic = monotonic
        self._clock = clock
        self._cache: dict[str, _CachedKey] = {}
        # One Principal per key, so later steps can cache by it.
        self._principals: dict[str, Principal] = {}

    async def _lookup(self, prefix: str) -> ApiKey | None:
        now = self._monotonic()
        cached = self._cache.get(prefix)
        if cached is not None and now - cached.fetched_at < self._ttl:
            return cached.key
        key = await self._keys.find_key(prefix)
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[prefix] = _CachedKey(key, now)
        return key

    def forget(self, prefix: str) -> None:
        """Drops a key's cached lookup (it was just revoked or rotated here): the next request
        with it reads the key again. Other auth processes still wait out their cache TTL."""
        self._cache.pop(prefix, None)

    async def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(
                "an API key is required: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                reason="API_KEY_MISSING",
            )
        presented = digest(secret)  # once: the operator's key and a tenant's are both compared by digest
        if hmac.compare_digest(presented, self._operator_key_digest):
            return _OPERATOR
        prefix = prefix_of(secret)
        key = authenticate(presented, await self._lookup(prefix) if prefix else None, self._clock())
        principal = self._principals.get(key.id)
        if principal is None or principal.scopes != frozenset(key.scopes) or principal.tenant_id != key.tenant_id:
            principal = Principal(key.tenant_id, key.id, frozenset(key.scopes))
            if len(self._principals) >= _MAX_CACHE_ENTRIES:
                self._principals.clear()
            self._principals[key.id] = principal
        return principal


def presented_secret(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get(AUTHORIZATION_HEADER, "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get(API_KEY_HEADER, "").strip() or None


_HTTP_STATUS = {
    code_pb2.INVALID_ARGUMENT: http_status_pb2.BadRequest,
    code_pb2.UNAUTHENTICATED: http_status_pb2.Unauthorized,
    code_pb2.PERMISSION_DENIED: http_status_pb2.Forbidden,
    code_pb2.NOT_FOUND: http_status_pb2.NotFound,
    code_pb2.RESOURCE_EXHAUSTED: http_status_pb2.TooManyRequests,
    code_pb2.UNAVAILABLE: http_status_pb2.ServiceUnavailable,
}


# Headers that mean one thing once: sent twice (which Envoy would join with a comma, and a
# service would read as two metadata values, one of them at random), the request is refused.
SINGLE_HEADERS = (AUTHORIZATION_HEADER, API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER, SESSION_HEADER, "content-type")


@dataclass
class _RawHeaders:
    by_name: dict[str, str]  # repeated ones joined with commas, as Envoy's map would have them
    repeated: set[str]  # names sent more than once
    size: int  # bytes of names and values, as Envoy counts them
    count: int


def _read_headers(http: attribute_context_pb2.AttributeContext.HttpRequest) -> _RawHeaders:
    """Envoy sends the headers raw (encode_raw_headers), each occurrence apart. A request with
    the joined map only (tests, an older edge) has none repeated."""
    if not http.header_map.headers:
        joined = dict(http.headers)
        return _RawHeaders(joined, set(), sum(len(k) + len(v) for k, v in joined.items()), len(joined))
    by_name: dict[str, str] = {}
    repeated: set[str] = set()
    size = count = 0
    for header in http.header_map.headers:
        key = header.key
        value = header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
        size += len(key) + len(value)
        count += 1
        if key in by_name:
            repeated.add(key)
            by_name[key] += "," + value
        else:
            by_name[key] = value
    return _RawHeaders(by_name, repeated, size, count)


def _header_violations(raw: _RawHeaders) -> DomainError | None:
    """Headers past the limits (431), or a header that means one thing sent twice (400)."""
    if raw.size > MAX_REQUEST_HEADER_BYTES or raw.count > MAX_REQUEST_HEADER_COUNT:
        limits = f"at most {MAX_REQUEST_HEADER_BYTES // 1024} KiB and {MAX_REQUEST_HEADER_COUNT} headers in all"
        return ResourceExhausted(
            f"the request's headers are larger than the gateway accepts ({limits})",
            reason="REQUEST_HEADERS_TOO_LARGE",
            field_violations=[FieldViolation("headers", f"must be {limits}")],
        )
    twice = sorted(name for name in raw.repeated if name in SINGLE_HEADERS)
    if twice:
        return invalid_fields([FieldViolation(name, "must be sent once") for name in twice], reason="DUPLICATE_HEADER")
    return None


def _grpc_content(headers: Mapping[str, str]) -> bool:
    """gRPC's content type (application/grpc, +proto and the like; not gRPC-Web): Envoy answers
    such a request the gRPC way (status in grpc-status, the body in grpc-message), so a
    denial is written for a gRPC client."""
    content_type = headers.get("content-type", "")
    return content_type == "application/grpc" or content_type.startswith(("application/grpc+", "application/grpc;"))


def _is_grpc(headers: Mapping[str, str], http: attribute_context_pb2.AttributeContext.HttpRequest) -> bool:
    """A gRPC call proper: gRPC's content type over HTTP/2. gRPC-Web, which the edge does not
    translate, and gRPC over HTTP/1.x, which no service can answer, are refused as an
    unsupported content type."""
    return _grpc_content(headers) and not http.protocol.startswith("HTTP/1")


class AuthorizationServicer:
    """Envoy's `envoy.service.auth.v3.Authorization` (registered with the generated
    `add_AuthorizationServicer_to_server`; its one method is Check)."""

    def __init__(
        self,
        authenticator: KeyAuthenticator,
        signer: IdentitySigner,
        routes: list[Route],
        *,
        edge_secret: bytes,
        limits: TenantLimitsCache | None = None,
        limiter: Limiter | None = None,
        last_use: LastUseRecorder | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._signer = signer
        self._edge_secret = edge_secret
        self._routes = RouteTable(routes)
        self._limits = limits
        self._limiter = limiter
        self._last_use = last_use
        # The OK response for a principal, with its identity token, reused within the second
        # the token was minted in (a minted token is the same for the whole second).
        self._allowed: dict[Principal, tuple[int, external_auth_pb2.CheckResponse]] = {}

    def _resolve(
        self, http: attribute_context_pb2.AttributeContext.HttpRequest, headers: Mapping[str, str]
    ) -> tuple[str, Route | None]:
        """The RPC a request is for, and for a JSON request its HTTP route."""
        if _is_grpc(headers, http):
            return http.path, None
        content_type = headers.get("content-type", "")
        if content_type.startswith("application/grpc"):
            raise InvalidArgument(
                f"content type {content_type!r} over {http.protocol or 'HTTP'} is not supported: gRPC"
                " clients send application/grpc over HTTP/2, JSON clients application/json",
                reason="UNSUPPORTED_CONTENT_TYPE",
            )
        route = self._routes.match(http.method, http.path)
        if route is None:
            raise NotFound(f"no API method at {http.method} {http.path.split('?', 1)[0]}", reason="METHOD_NOT_FOUND")
        return route.full_method, route

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: ServicerContext[external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse],
    ) -> external_auth_pb2.CheckResponse:
        self._require_edge(context)
        http = request.attributes.request.http
        raw = _read_headers(http)
        headers = raw.by_name
        request_id = headers.get(REQUEST_ID_HEADER)
        method = http.path
        principal: Principal | None = None
        try:
            refused = _header_violations(raw)
            if refused is not None:
                raise refused
            principal = await self._authenticator.authenticate(presented_secret(headers))
            method, route = self._resolve(http, headers)
            if not method.startswith("/vocalbridge."):
                raise NotFound(f"no API method at {method}", reason="METHOD_NOT_FOUND")
            if route is not None:
                try:
                    document, violations = parse_body(route, http.raw_body or http.body.encode())
                except JsonTooDeep as exc:
                    raise invalid_fields([FieldViolation("body", str(exc))], reason="JSON_TOO_DEEP") from None
                if violations:
                    raise invalid_fields(violations, reason="INVALID_REQUEST_BODY")
                # Before any side effect: the request that runs is the one the path names.
                conflicts = binding_conflicts(route, http.path, document)
                if conflicts:
                    raise invalid_fields(conflicts, reason="FIELD_CONFLICTS_WITH_PATH")
            if not scope_policy.allows(principal.scopes, method):
                needed = scope_policy.required_scope(method)
                raise PermissionDenied(
                    f"this API key lacks the '{needed}' scope",
                    reason="SCOPE_INSUFFICIENT",
                    metadata={"requiredScope": needed},
                )
            rate_headers = await self._limit(principal)
        except DomainError as error:
            log.info("denied", extra={"method": method, "reason": error.reason})
            denied = self._deny(
                to_rpc_status(error, request_id),
                grpc_client=_grpc_content(headers),
                extra=self._headers_of(error, http, headers),
            )
            if principal is not None:  # a known key refused (scope, body, rate): the log says whose
                denied.dynamic_metadata.CopyFrom(_log_fields(principal))
            return denied
        except Exception:
            log.exception("key check failed")
            unavailable = Unavailable("authentication is temporarily unavailable")
            return self._deny(
                to_rpc_status(unavailable, request_id),
                grpc_client=_grpc_content(headers),
                extra=self._headers_of(unavailable, http, headers),
            )
        allowed = self._allow(principal)
        if not rate_headers:
            return allowed
        # The identity part is shared within the second; the rate headers are this request's.
        response = external_auth_pb2.CheckResponse()
        response.CopyFrom(allowed)
        response.ok_response.response_headers_to_add.extend(_header_options(rate_headers))
        return response

    def _require_edge(
        self, context: ServicerContext[external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse]
    ) -> None:
        """Refuses a caller that is not the edge (no edge secret, or another one): the
        interceptor answers UNAUTHENTICATED, and nothing is looked up."""
        presented = next((v for k, v in context.invocation_metadata() or () if k == EDGE_SECRET_HEADER), "")
        if not isinstance(presented, str) or not hmac.compare_digest(presented.encode(), self._edge_secret):
            raise Unauthenticated("Check answers the edge only", reason="EDGE_SECRET_INVALID")

    def _headers_of(
        self,
        error: DomainError,
        http: attribute_context_pb2.AttributeContext.HttpRequest,
        headers: Mapping[str, str],
    ) -> Mapping[str, str]:
        """The headers a denial carries: the error's own, and on a JSON request of the
        OpenAI-compatible API its OpenAI rendering (only denials pay for the route lookup)."""
        if _is_grpc(headers, http):
            return error.headers
        route = self._routes.match(http.method, http.path)
        if route is None or not route.full_method.startswith(OPENAI_METHOD_PREFIX):
            return error.headers
        return {**error.headers, **openai_error_headers(error)}

    async def _limit(self, principal: Principal) -> dict[str, str]:
        """Notes the key's use and charges the request to the tenant's and the key's rate
        limits: the x-ratelimit-* headers for the response, or RateLimited. No store call
        (and nothing but two dictionary lookups) for a tenant without rate limits."""
        if not principal.tenant_id:
            return {}
        if self._last_use is not None:
            self._last_use.used(principal.key_id)
        if self._limits is None or self._limiter is None:
            return {}
        limits = await self._limits.get(principal.tenant_id)
        if not limits.rate_limits:
            return {}
        return await self._limiter.check_request(limits, principal.key_id)

    def _allow(self, principal: Principal) -> external_auth_pb2.CheckResponse:
        now = time.time()
        second = int(now)
        cached = self._allowed.get(principal)
        if cached is not None and cached[0] == second:
            return cached[1]
        token = self._signer.mint(principal.tenant_id, principal.key_id, principal.scopes, now=now)
        response = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key=IDENTITY_HEADER, value=token),
                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                    )
                ],
                # The services never need the secret; keep it out of their logs and memory.
                headers_to_remove=[AUTHORIZATION_HEADER, API_KEY_HEADER],
            ),
            # Whose request it was, for the edge's access log (it reads ext_authz's metadata).
            dynamic_metadata=_log_fields(principal),
        )
        if len(self._allowed) >= _MAX_CACHE_ENTRIES:
            self._allowed.clear()
        self._allowed[principal] = (second, response)
        return response

    @staticmethod
    def _deny(
        status: status_pb2.Status, grpc_client: bool, extra: Mapping[str, str] | None = None
    ) -> external_auth_pb2.CheckResponse:
        body = json_format.MessageToJson(status, indent=None)
        response_headers = [
            base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="content-type", value="application/json"))
        ]
        if grpc_client:
            # A gRPC client reads the rich status (ErrorInfo reason…) from grpc-status-details-bin;
            # Envoy turns the body into grpc-message, which must equal the status message.
            body = status.message
            rich = [
                ("grpc-status", str(status.code)),
                ("grpc-status-details-bin", base64.b64encode(status.SerializeToString()).decode().rstrip("=")),
            ]
            response_headers += [
                base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value)) for key, value in rich
            ]
        if extra:
            response_headers += _header_options(extra)
        if status.code == code_pb2.UNAUTHENTICATED:
            response_headers.append(
                base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="www-authenticate", value="Bearer"))
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=status.code, message=status.message),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=_http_status(status)),
                headers=response_headers,
                body=body,
            ),
        )


def _http_status(status: status_pb2.Status) -> int:
    """The HTTP status of a denial: from its gRPC code, but 431 for headers too large (which
    RESOURCE_EXHAUSTED, like a rate limit, would make 429)."""
    info = error_details_pb2.ErrorInfo()
    too_large = (
        status.code == code_pb2.RESOURCE_EXHAUSTED
        and len(status.details) > 0
        and status.details[0].Unpack(info)
        and info.reason == "REQUEST_HEADERS_TOO_LARGE"
    )
    if too_large:
        return int(http_status_pb2.RequestHeaderFieldsTooLarge)
    return int(_HTTP_STATUS.get(status.code, http_status_pb2.Forbidden))


def _log_fields(principal: Principal) -> struct_pb2.Struct:
    """What the edge's access log records of the caller (ext_authz dynamic metadata)."""
    return struct_pb2.Struct(
        fields={
            "tenant": struct_pb2.Value(string_value=principal.tenant_id),
            "key": struct_pb2.Value(string_value=principal.key_id),
        }
    )


def _header_options(headers: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for key, value in headers.items()
    ]
