"""The domain-error hierarchy and its mapping to `google.rpc.Status`.

Services raise these; one server interceptor turns them into a rich status
(ErrorInfo with an UPPER_SNAKE reason, BadRequest field violations,
RequestInfo with the request id). Handlers never build status codes by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "vocalbridge.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its path in the request (snake_case) and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a client may see. Subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        details: Sequence[Message] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.field_violations = tuple(field_violations)
        # Further protobuf messages for the client, packed into the status details
        # after ErrorInfo (for example the delivery record of a failed turn).
        self.details = tuple(details)
        # Response headers (gRPC metadata) sent with the error, lower-case names: for example
        # `retry-after` on RATE_LIMITED; Envoy passes them on to JSON clients.
        self.headers = dict(headers or {})


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


def invalid_fields(violations: Sequence[FieldViolation], reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    """One InvalidArgument carrying every violation, so a client fixes all at once."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidArgument(f"invalid request: {summary}", reason=reason, field_violations=violations)


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_code(code: grpc.StatusCode) -> int:
    """The number of a gRPC status code (`google.rpc.Code`)."""
    number: int = code.value[0]
    return number


# What a status may carry, at most: errors echo client input (a name, a field's problem),
# and a status too big for a trailer turns into a 502/503 at Envoy instead of this error.
MAX_STATUS_MESSAGE = 1000
MAX_METADATA_VALUE = 500
MAX_VIOLATIONS = 20
MAX_VIOLATION_FIELD = 200
MAX_VIOLATION_DESCRIPTION = 300


def shorten(value: str, limit: int) -> str:
    """`value`, cut to at most `limit` characters (an ellipsis marks the cut)."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def to_rpc_status(error: DomainError, request_id: str | None) -> status_pb2.Status:
    """The google.rpc.Status a client receives for `error`: every text in it bounded here, once,
    whatever the error echoes."""
    status = status_pb2.Status(code=status_code(error.code), message=shorten(error.message, MAX_STATUS_MESSAGE))
    metadata = {shorten(k, MAX_VIOLATION_FIELD): shorten(v, MAX_METADATA_VALUE) for k, v in error.metadata.items()}
    status.details.append(
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))
    )
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=shorten(v.field, MAX_VIOLATION_FIELD),
                    description=shorten(v.description, MAX_VIOLATION_DESCRIPTION),
                )
                for v in error.field_violations[:MAX_VIOLATIONS]
            ]
        )
        status.details.append(_pack(bad_request))
    for detail in error.details:
        status.details.append(_pack(detail))
    if request_id:
        status.details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    return status


def status_for(error: Exception, request_id: str | None) -> status_pb2.Status:
    """The status a client receives for any exception a handler raised: a domain error's
    own status, and for anything else INTERNAL with nothing about its cause (its text may
    hold data, SQL or secrets; the server logs it with the request id instead)."""
    if isinstance(error, DomainError):
        return to_rpc_status(error, request_id)
    if database_unreachable(error):
        outage = Unavailable("the database is unavailable; retry shortly", reason="DATABASE_UNAVAILABLE")
        return to_rpc_status(outage, request_id)
    return to_rpc_status(DomainError("internal error; the request id identifies it in the logs"), request_id)


# SQLSTATE class 08 (connection exception) and the server shutting down or starting up.
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def database_unreachable(error: BaseException) -> bool:
    """Whether an error (or one it was raised from) says the database could not be reached: a
    refused or dropped connection, a server shutting down or starting. Such a call may succeed
    when retried, so clients get UNAVAILABLE rather than INTERNAL, which gRPC clients do not retry.
    Read from the exception chain without importing a driver: asyncpg and psycopg carry `sqlstate`,
    SQLAlchemy wraps them (`orig`) and marks a detected disconnect (`connection_invalidated`)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionError) or getattr(current, "connection_invalidated", False) is True:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_OUTAGE_SQLSTATES):
            return True
        orig = getattr(current, "orig", None)
        pending += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]
    return False


# -- errors about resources that more than one service names ------------------------
# Metadata echoes at most MAX_ECHO characters of what the client sent.

MAX_ECHO = 200


def echo(value: str) -> str:
    """Client input as it may appear in an error: shortened, so a huge input cannot grow the error past a limit."""
    return shorten(value, MAX_ECHO)


class AgentNotFound(NotFound):
    default_reason = "AGENT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"agent {echo(name)!r} not found", metadata={"name": echo(name)})


class SessionNotFound(NotFound):
    default_reason = "SESSION_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"session {echo(name)!r} not found", metadata={"session": echo(name)})


class RateLimited(ResourceExhausted):
    """A rate limit refused the request; `retry_after_seconds` says when it fits again."""

    default_reason = "RATE_LIMITED"

    def __init__(
        self, message: str, *, retry_after_seconds: int, metadata: Mapping[str, str], headers: Mapping[str, str]
    ) -> None:
        super().__init__(
            message,
            metadata={**metadata, "retryAfterSeconds": str(retry_after_seconds)},
            headers={**headers, "retry-after": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


class BudgetExceeded(ResourceExhausted):
    """A spend budget has no room for the request; retrying will not help before the window ends."""

    default_reason = "BUDGET_EXCEEDED"

    def __init__(self, message: str, *, metadata: Mapping[str, str]) -> None:
        super().__init__(message, metadata=metadata, headers={"x-should-retry": "false"})


class LimitsUnavailable(ResourceExhausted):
    """The limit counters cannot be reached and the gateway is configured to fail closed."""

    default_reason = "LIMITS_UNAVAILABLE"

    def __init__(self, what: str, retry_after_seconds: int = 1) -> None:
        super().__init__(
            f"{what} cannot be checked right now; retry shortly",
            metadata={"retryAfterSeconds": str(retry_after_seconds)},
            headers={"retry-after": str(retry_after_seconds)},
        )
