"""The one server interceptor every service runs.

Per call, whatever its kind (unary or streaming in either direction), it:
assigns the request id (Envoy's x-request-id, or a new one), refuses a request
that does not decode (INVALID_ARGUMENT, logged as one request line, no stack
trace), verifies the signed identity header and the scope the method needs,
refuses text that cannot be stored (validation.request_violations) before the
handler runs, maps domain errors to
rich google.rpc.Status, hides unexpected exceptions behind INTERNAL with a
logged stack trace, writes one JSON log line, and records the call's duration by
method and status code (vocalbridge_common.metrics.REQUEST_SECONDS).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Any, cast

import grpc
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from grpc_status import rpc_status
from prometheus_client import Histogram

from vocalbridge_common import scopes as scope_policy
from vocalbridge_common.context import identity_token_var, identity_var, request_id_var
from vocalbridge_common.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    invalid_fields,
    status_for,
)
from vocalbridge_common.headers import IDENTITY_HEADER, REQUEST_ID_HEADER
from vocalbridge_common.identity import IdentitySigner, InvalidIdentity
from vocalbridge_common.metrics import REQUEST_SECONDS
from vocalbridge_common.validation import request_violations, undecodable_fields

log = logging.getLogger("vocalbridge.request")

# Infrastructure endpoints that carry no caller identity.
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

# The four handler shapes grpc.aio accepts; the request argument is a message or,
# for client-streaming kinds, an async iterator of messages.
Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]
_Reset = list[tuple[ContextVar[Any], Token[Any]]]
Deserializer = Callable[[bytes], Any]


class _Undecodable:
    """What a request that failed to decode becomes: grpc deserializes before any interceptor
    code runs, and an exception there would reach the client as UNKNOWN with the parser's
    message, after grpc logs a stack trace. The guarded handler refuses it instead, naming the
    fields that are not UTF-8 when that is why."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[FieldViolation]) -> None:
        self.fields = fields


def _tolerant(deserializer: Deserializer | None) -> Deserializer | None:
    if deserializer is None:
        return None
    # A generated message's FromString, bound to its class: the descriptor names the fields.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - whatever the parser raises, the request is malformed
            fields = undecodable_fields(descriptor, data) if isinstance(descriptor, Descriptor) else []
            return _Undecodable(fields)

    return deserialize


class _NoMessage:
    """What a unary call whose client closed its side without a message becomes."""

    __slots__ = ()


_NO_MESSAGE = _NoMessage()


def _first_message(behavior: UnaryBehavior) -> UnaryBehavior:
    """A unary handler served as client streaming (the wire is the same): grpc.aio never
    answers a unary call whose client sent no message, leaving it open until its deadline
    (through Envoy, the route's timeout). Here the first message is the request, and none at
    all is refused like any other bad request."""

    async def first(requests: AsyncIterator[Any], context: Context) -> Any:
        async for request in requests:
            return await behavior(request, context)
        return await behavior(_NO_MESSAGE, context)

    return first


def _undecodable(request: _Undecodable) -> InvalidArgument:
    return InvalidArgument(
        "the request does not decode: a text field (in the body, path or query) is not valid UTF-8,"
        " or the bytes are not this method's request message",
        reason="INVALID_REQUEST_BODY",
        field_violations=request.fields or [FieldViolation("body", "does not decode as this method's request message")],
    )


def _check_request(request: Any) -> None:
    """Refuses a request that did not decode or carries text that cannot be stored."""
    if isinstance(request, _Undecodable):
        raise _undecodable(request)
    if isinstance(request, Message):
        violations = request_violations(request)
        if violations:
            raise invalid_fields(violations)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream whose every message is checked as it arrives."""
    async for request in requests:
        _check_request(request)
        yield request


class _MethodTimer:
    """One method's latency histograms, one per status code, bound once: a call only observes."""

    __slots__ = ("_by_code", "_method", "_service")

    def __init__(self, method: str) -> None:
        self._service, _, self._method = method.lstrip("/").rpartition("/")
        self._by_code: dict[grpc.StatusCode, Histogram] = {}
        self._bind(grpc.StatusCode.OK)

    def _bind(self, code: grpc.StatusCode) -> Histogram:
        child = self._by_code[code] = REQUEST_SECONDS.labels(self._service, self._method, code.name)
        return child

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        child = self._by_code.get(code)
        (child if child is not None else self._bind(code)).observe(seconds)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, signer: IdentitySigner, public_methods: tuple[str, ...] = ()) -> None:
        self._signer = signer
        self._public_methods = frozenset(public_methods)
        # method → (the registered handler, its guarded version): wrapped once, not per call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = self._guard(method, handler)
        self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        # Health checks and reflection are neither timed nor logged (probes would drown the
        # rest); they are guarded only so a request that does not decode is refused and logged.
        timer = None if method.startswith(PUBLIC_METHOD_PREFIXES) else _MethodTimer(method)
        codecs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        # grpc.aio handlers are coroutine functions and async generators, whatever the stubs say.
        if handler.unary_unary:
            unary = cast(UnaryBehavior, handler.unary_unary)
            return grpc.stream_unary_rpc_method_handler(
                _first_message(self._wrap_unary(method, timer, unary)), **codecs
            )
        if handler.unary_stream:
            if not inspect.isasyncgenfunction(handler.unary_stream):
                # It writes its responses with context.write (grpc's health Watch): one awaited call.
                writer = cast(UnaryBehavior, handler.unary_stream)
                return grpc.unary_stream_rpc_method_handler(self._wrap_unary(method, timer, writer), **codecs)
            stream = cast(StreamBehavior, handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(self._wrap_stream(method, timer, stream), **codecs)
        if handler.stream_unary:
            unary = cast(UnaryBehavior, handler.stream_unary)
            return grpc.stream_unary_rpc_method_handler(self._wrap_unary(method, timer, unary), **codecs)
        if handler.stream_stream:
            if not inspect.isasyncgenfunction(handler.stream_stream):
                writer = cast(UnaryBehavior, handler.stream_stream)
                return grpc.stream_stream_rpc_method_handler(self._wrap_unary(method, timer, writer), **codecs)
            stream = cast(StreamBehavior, handler.stream_stream)
            return grpc.stream_stream_rpc_method_handler(self._wrap_stream(method, timer, stream), **codecs)
        # A handler of no known kind would run unguarded: refuse to serve it at all.
        raise RuntimeError(f"{method}: handler of an unknown kind cannot be guarded")

    def _public(self, method: str) -> bool:
        return method in self._public_methods or method.startswith(PUBLIC_METHOD_PREFIXES)

    def _enter(self, method: str, context: Context, reset: _Reset, request: Any) -> None:
        """Sets the call's context variables (recorded in `reset`), refuses a request that did not
        decode (whoever sent it), then checks identity and scope, then the request's text."""
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        request_id = metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        reset.append((request_id_var, request_id_var.set(request_id)))
        if isinstance(request, _Undecodable):
            raise _undecodable(request)
        if request is _NO_MESSAGE:
            raise InvalidArgument("the call carried no request message", reason="REQUEST_MESSAGE_MISSING")
        if self._public(method):
            return
        token = metadata.get(IDENTITY_HEADER)
        try:
            identity = self._signer.verify(token)
        except InvalidIdentity as exc:
            raise Unauthenticated(f"request refused: {exc}", reason="INVALID_IDENTITY") from None
        reset.append((identity_var, identity_var.set(identity)))
        reset.append((identity_token_var, identity_token_var.set(token)))
        if not identity.allows(method):
            needed = scope_policy.required_scope(method)
            raise PermissionDenied(
                f"this API key lacks the '{needed}' scope",
                reason="SCOPE_INSUFFICIENT",
                metadata={"requiredScope": needed},
            )
        _check_request(request)

    @staticmethod
    def _leave(reset: _Reset) -> None:
        for var, token in reversed(reset):
            var.reset(token)

    @staticmethod
    def _log(method: str, code: grpc.StatusCode, seconds: float) -> None:
        log.info(
            "request",
            extra={
                "method": method,
                "status": code.name,
                "latency_ms": round(seconds * 1000, 2),
            },
        )

    @staticmethod
    async def _fail(context: Context, error: Exception, request_id: str | None, method: str) -> None:
        if not isinstance(error, DomainError):
            log.error("unexpected error in %s", method, exc_info=error)
        grpc_status = rpc_status.to_status(status_for(error, request_id))
        trailing = grpc_status.trailing_metadata
        if isinstance(error, DomainError) and error.headers:
            trailing = (*trailing, *error.headers.items())
        await context.abort(grpc_status.code, grpc_status.details, trailing)

    @contextlib.asynccontextmanager
    async def _call(
        self, method: str, timer: _MethodTimer | None, context: Context, request: Any
    ) -> AsyncIterator[None]:
        """One call's scope, the same for every RPC kind: context in, errors mapped, one log line out
        (for the infrastructure methods, health and reflection, only when they fail)."""
        started = time.perf_counter()
        reset: _Reset = []
        code = grpc.StatusCode.OK
        try:
            self._enter(method, context, reset, request)
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
            seconds = time.perf_counter() - started
            if timer is not None or code is not grpc.StatusCode.OK:
                self._log(method, code, seconds)
            if timer is not None:
                timer.observe(code, seconds)
            self._leave(reset)

    def _wrap_unary(self, method: str, timer: _MethodTimer | None, inner: UnaryBehavior) -> UnaryBehavior:
        """For handlers that return one response: unary-unary and stream-unary."""

        async def behavior(request: Any, context: Context) -> Any:
            # A client stream's messages are checked as they arrive; a single request, on entry.
            single = not isinstance(request, AsyncIterator)
            async with self._call(method, timer, context, request if single else None):
                return await inner(request if single else _checked(request), context)
            return None  # unreachable: the scope re-raises or aborts

        return behavior

    def _wrap_stream(self, method: str, timer: _MethodTimer | None, inner: StreamBehavior) -> StreamBehavior:
        """For handlers that yield responses: unary-stream and stream-stream."""

        async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            single = not isinstance(request, AsyncIterator)
            async with self._call(method, timer, context, request if single else None):
                async for item in inner(request if single else _checked(request), context):
                    yield item

        return behavior
