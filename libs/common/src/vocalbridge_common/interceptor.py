"""The one server interceptor every service runs.

Per call it: assigns the request id (Envoy's x-request-id, or a new one),
verifies the signed identity header and the scope the method needs, maps
domain errors to rich google.rpc.Status, hides unexpected exceptions behind
INTERNAL with a logged stack trace, and writes one JSON log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import grpc
from grpc_status import rpc_status

from vocalbridge_common import scopes as scope_policy
from vocalbridge_common.context import identity_token_var, identity_var, request_id_var
from vocalbridge_common.errors import DomainError, PermissionDenied, Unauthenticated, internal_status, to_rpc_status
from vocalbridge_common.identity import IDENTITY_HEADER, IdentitySigner, InvalidIdentity

log = logging.getLogger("vocalbridge.request")

# Infrastructure endpoints that carry no caller identity.
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, signer: IdentitySigner, public_methods: tuple[str, ...] = ()) -> None:
        self._signer = signer
        self._public_methods = frozenset(public_methods)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods are not part of the API

    def _enter(self, method: str, context, tokens: list) -> None:
        """Sets the call's context variables (recorded in `tokens` for reset) and checks identity."""
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex
        tokens.append((request_id_var, request_id_var.set(request_id)))
        if method not in self._public_methods:
            token = metadata.get(IDENTITY_HEADER)
            try:
                identity = self._signer.verify(token)
            except InvalidIdentity as exc:
                raise Unauthenticated(f"request refused: {exc}", reason="INVALID_IDENTITY") from None
            tokens.append((identity_var, identity_var.set(identity)))
            tokens.append((identity_token_var, identity_token_var.set(token)))
            if not identity.allows(method):
                raise PermissionDenied(
                    f"this API key lacks the '{scope_policy.required_scope(method)}' scope",
                    reason="SCOPE_INSUFFICIENT",
                    metadata={"requiredScope": scope_policy.required_scope(method)},
                )

    @staticmethod
    def _leave(tokens: list) -> None:
        for var, token in reversed(tokens):
            var.reset(token)

    @staticmethod
    def _log(method: str, code: grpc.StatusCode, started: float) -> None:
        log.info(
            "request",
            extra={
                "method": method,
                "status": code.name,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    async def _fail(self, context, error: Exception, request_id: str | None, method: str) -> None:
        if isinstance(error, DomainError):
            status = to_rpc_status(error, request_id)
        else:
            log.error("unexpected error in %s", method, exc_info=error)
            status = internal_status(request_id)
        grpc_status = rpc_status.to_status(status)
        await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context):
        """One call's scope, for unary and streaming handlers alike: context in, errors
        mapped, one log line out."""
        started = time.perf_counter()
        tokens: list = []
        code = grpc.StatusCode.OK
        try:
            self._enter(method, context, tokens)
            yield
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:  # noqa: BLE001 - the boundary where every error is mapped
            code = error.code if isinstance(error, DomainError) else grpc.StatusCode.INTERNAL
            await self._fail(context, error, request_id_var.get(), method)
        finally:
            self._log(method, code, started)
            self._leave(tokens)

    def _wrap_unary(self, method: str, inner):
        async def behavior(request, context):
            async with self._call(method, context):
                return await inner(request, context)

        return behavior

    def _wrap_stream(self, method: str, inner):
        async def behavior(request, context):
            async with self._call(method, context):
                async for item in inner(request, context):
                    yield item

        return behavior
