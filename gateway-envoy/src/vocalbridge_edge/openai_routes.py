"""The edge's part of the OpenAI-compatible API (`vocalbridge.openai.v1`): its HTTP paths and the
Lua filter that gives its clients errors in OpenAI's shape.

Bodies pass through as raw bytes (google.api.HttpBody), so the transcoder's JSON mapping is not
involved; what the edge must still do is turn every refusal into OpenAI's
`{"error": {"message", "type", "param", "code"}}` with the right status, whoever refused:

- the service and auth.Check render the OpenAI error themselves (vocalbridge_common.openai_errors)
  and send it in the `x-vb-openai-error` header (a gRPC trailer, or a header of Check's denial);
  the filter moves it into the body and removes the header;
- Envoy's own replies on these routes (413 from the body limit, 503 when the service is down,
  504 after the route's time limit, 400 from the transcoder...) carry no such header: the filter
  writes OpenAI's error for the status, from a table rendered here from the same reasons and
  messages as the google.rpc.Status bodies of the other routes.

Whatever the bytes, a client of these routes sees OpenAI's error JSON (never a stack trace), and
`x-should-retry: false` where a retry cannot help. Successful responses, streamed or not, pass
untouched (the filter only reads headers), and a native gRPC client's response is left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from vocalbridge_common.headers import OPENAI_ERROR_HEADER, SHOULD_RETRY_HEADER
from vocalbridge_common.openai_errors import error_type

# The package (`vocalbridge.<PACKAGE>.v1`; topology.SERVED_PACKAGES says which service serves it)
# and its HTTP paths, as its google.api.http rules have them (a contract test compares).
PACKAGE = "openai"
PATHS = ("/v1/chat/completions", "/v1/models")
# The name the routes use for the filter's code (Lua's `source_codes`).
LUA_CODE_NAME = "openai_errors"


def _error_json(status: int, code: str, message: str) -> str:
    document = {"error": {"message": message, "type": error_type(status), "param": None, "code": code}}
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def _lua_string(text: str) -> str:
    """A Lua long string holding `text` (JSON never contains the closing bracket sequence used)."""
    assert "]==]" not in text
    return f"[==[{text}]==]"


def lua_source(local_replies: Iterable[tuple[int, str, str]]) -> str:
    """The filter's code. `local_replies`: (HTTP status, reason, message) of Envoy's own replies,
    the first of each status kept."""
    table: dict[int, str] = {}
    for status, reason, message in local_replies:
        table.setdefault(status, _error_json(status, reason.lower(), message))
    entries = "\n".join(f"  [{status}] = {_lua_string(body)}," for status, body in sorted(table.items()))
    return f"""-- OpenAI's error shape on the OpenAI-compatible routes (vocalbridge_edge.openai_routes).
local replies = {{
{entries}
}}

local function escaped(text)
  return (string.gsub(text, '[%c"\\\\]', function(c) return string.format("\\\\u%04x", string.byte(c)) end))
end

local function generic(status)
  local kind = "invalid_request_error"
  if status == 401 then kind = "authentication_error"
  elseif status == 403 then kind = "permission_error"
  elseif status == 429 then kind = "rate_limit_error"
  elseif status >= 500 then kind = "server_error" end
  return '{{"error":{{"message":"The gateway refused the request (HTTP ' .. status .. ').","type":"' ..
    kind .. '","param":null,"code":"http_' .. status .. '"}}}}'
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.sub(content_type, 1, 16) == "application/grpc" then
    return -- a native gRPC client: its error is in grpc-status and its details
  end
  local status = tonumber(headers:get(":status")) or 500
  local body = headers:get("{OPENAI_ERROR_HEADER}")
  if body == nil then
    if status < 400 then
      -- Success, streamed or not: the body untouched; a unary answer's gRPC status is no
      -- business of an OpenAI client.
      headers:remove("grpc-status")
      headers:remove("grpc-message")
      return
    end
    body = replies[status] or generic(status)
    if status < 500 and status ~= 408 and status ~= 409 and status ~= 429 then
      headers:replace("{SHOULD_RETRY_HEADER}", "false")
    end
  end
  headers:remove("{OPENAI_ERROR_HEADER}")
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
  headers:replace("content-type", "application/json")
  handle:body(true):setBytes(body)
end
"""
