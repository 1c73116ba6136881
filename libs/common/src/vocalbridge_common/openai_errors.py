"""OpenAI's error shape, for the OpenAI-compatible API (`vocalbridge.openai.v1`).

OpenAI's SDKs read `{"error": {"message", "type", "param", "code"}}` and pick their exception
class by the HTTP status. Every refusal of one of that API's requests is a domain error like
any other (google.rpc.Status, ErrorInfo reason); this module renders it in OpenAI's shape, once,
for both places that refuse those requests: the conversation service (its trailers) and auth's
Check (its denial). The rendering travels in the `x-vb-openai-error` header and the edge puts
it into the response body (gateway-envoy's Lua filter on these routes), so the client sees
OpenAI's shape with the HTTP status of the gRPC code, whoever refused.

Mapping: `type` follows the HTTP status as OpenAI uses it (invalid_request_error for 4xx,
authentication_error 401, permission_error 403, rate_limit_error or insufficient_quota 429,
server_error 5xx); `code` is the ErrorInfo reason in lower case, or OpenAI's own name for the
few reasons OpenAI clients know (model_not_found, rate_limit_exceeded, insufficient_quota,
invalid_api_key); `param` is the first invalid field. `x-should-retry: false` (which the SDKs
obey) marks the refusals a retry of the same request cannot change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc

from vocalbridge_common.errors import DomainError
from vocalbridge_common.headers import OPENAI_ERROR_HEADER, SHOULD_RETRY_HEADER

# Full method names of the OpenAI-compatible API start with this.
OPENAI_METHOD_PREFIX = "/vocalbridge.openai.v1."
# Longest `message` sent (the header must stay small; echoes of input are short already).
MAX_MESSAGE_CHARS = 1000

# The HTTP status Envoy's transcoder gives each gRPC code (grpc-status → HTTP).
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# OpenAI's names for what its clients already handle.
_CODES = {
    "AGENT_NOT_FOUND": "model_not_found",
    "RATE_LIMITED": "rate_limit_exceeded",
    "BUDGET_EXCEEDED": "insufficient_quota",
    "API_KEY_INVALID": "invalid_api_key",
    "API_KEY_REVOKED": "invalid_api_key",
    "API_KEY_EXPIRED": "invalid_api_key",
}
# Refusals that the same request can get past later: waiting (a limit's window, a key in use by
# a request still running, a request timeout). Every other 4xx stays what it is.
_RETRYABLE_REASONS = frozenset({"RATE_LIMITED", "LIMITS_UNAVAILABLE", "IDEMPOTENCY_KEY_IN_USE"})


def error_type(http_status: int, reason: str = "") -> str:
    """OpenAI's `type` for a refusal with this HTTP status (and reason)."""
    if http_status == 401:
        return "authentication_error"
    if http_status == 403:
        return "permission_error"
    if http_status == 429:
        return "insufficient_quota" if reason == "BUDGET_EXCEEDED" else "rate_limit_error"
    if http_status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_code(reason: str) -> str:
    """OpenAI's `code` for an ErrorInfo reason."""
    return _CODES.get(reason, reason.lower())


def openai_error(error: DomainError, message: str | None = None) -> dict[str, object]:
    """`error` as OpenAI's error object: {"error": {"message", "type", "param", "code"}};
    `message` in place of the error's own, when the caller says more."""
    status = HTTP_STATUS.get(error.code, 500)
    message = error.message if message is None else message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return {
        "error": {
            "message": message,
            "type": error_type(status, error.reason),
            "param": error.field_violations[0].field if error.field_violations else None,
            "code": error_code(error.reason),
        }
    }


def should_retry(error: DomainError) -> bool | None:
    """False when retrying the same request cannot help; None when OpenAI's SDKs decide (by status)."""
    status = HTTP_STATUS.get(error.code, 500)
    if 400 <= status < 500 and status != 408 and error.reason not in _RETRYABLE_REASONS:
        return False
    return None


def header_value(document: object) -> str:
    """JSON as a header (gRPC metadata) value: printable ASCII on one line."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).replace("\x7f", "\\u007f")


def openai_error_headers(error: DomainError, message: str | None = None) -> dict[str, str]:
    """The headers an OpenAI-compatible refusal carries: its OpenAI error JSON (for the edge to
    put into the body) and `x-should-retry: false` when retrying cannot help."""
    headers = {OPENAI_ERROR_HEADER: header_value(openai_error(error, message))}
    if should_retry(error) is False:
        headers[SHOULD_RETRY_HEADER] = "false"
    return headers
