"""An adapter for Anthropic's Messages API: POST {base_url}/v1/messages, plain or streamed (SSE).

The gateway's conversation is reshaped into what Anthropic accepts:
  * system messages go to the top-level `system` field (Anthropic has no system role);
  * consecutive messages of one role are merged into one turn, since user and assistant
    must alternate, and empty messages are left out (Anthropic refuses empty content);
  * a history that starts with an assistant reply (the context budget cut the user message
    before it, or the client opened with a greeting) gets a short user turn in front, since
    the first message must be the user's;
  * `max_tokens` is required: the agent's max output tokens, else the configured default;
  * temperature is clamped to Anthropic's 0…1 (agents may set up to 2, OpenAI's scale);
  * stop sequences go as `stop_sequences`, the end user as `metadata.user_id`.

Failures are classified for the delivery engine:
  timeout (connect, read or overall)                  → TIMEOUT
  connection refused / reset / protocol               → UNAVAILABLE
  429 rate_limit_error                                → RATE_LIMITED, retry_after from retry-after
  529 overloaded_error, 500 api_error, other 5xx,
  408, 409                                            → UNAVAILABLE (retry-after honoured when sent)
  401 authentication_error, 402 billing_error,
  403 permission_error                                → AUTHENTICATION (this gateway's account)
  400 invalid_request_error, 404 not_found_error,
  413 request_too_large, other 4xx                    → BAD_REQUEST
  malformed JSON, missing fields                      → PROVIDER_ERROR
  an `error` event mid-stream                         → by its error type, as the statuses above
A 504 timeout_error is UNAVAILABLE, not TIMEOUT: the engine reads TIMEOUT as its own attempt
timeout or the caller's deadline running out, and would stop instead of retrying.

Configuration: VB_ANTHROPIC_PROVIDERS=name1,name2 and per name
VB_PROVIDER_<NAME>_API_KEY (required; sent as `x-api-key`),
VB_PROVIDER_<NAME>_BASE_URL (default https://api.anthropic.com, without /v1),
VB_PROVIDER_<NAME>_MODEL (used when the agent names no model),
VB_PROVIDER_<NAME>_MAX_TOKENS (default 4096, when the agent sets no max output tokens).
Each call is bounded by the delivery engine's attempt timeout, as for every provider.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from vocalbridge_common.config import ConfigError, Env
from vocalbridge_conversation.providers.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    StreamChunk,
    provider_env_key,
)
from vocalbridge_conversation.providers.http_transport import (
    HttpEndpoint,
    clip,
    completion,
    error_detail,
    json_object,
    reading_reply,
    status_failure,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
# Every Claude model accepts at least this many output tokens.
DEFAULT_MAX_TOKENS = 4096
API_VERSION = "2023-06-01"
# Put in front of a history that starts with an assistant reply.
OPENING_USER_TURN = "(conversation continues)"

_TRUNCATED = frozenset({"max_tokens", "model_context_window_exceeded"})
# Anthropic's error types, for `error` events mid-stream (HTTP errors go by status).
_ERROR_TYPES: Mapping[str, FailureKind] = {
    "rate_limit_error": FailureKind.RATE_LIMITED,
    "overloaded_error": FailureKind.UNAVAILABLE,
    "api_error": FailureKind.UNAVAILABLE,
    "timeout_error": FailureKind.UNAVAILABLE,
    "authentication_error": FailureKind.AUTHENTICATION,
    "billing_error": FailureKind.AUTHENTICATION,
    "permission_error": FailureKind.AUTHENTICATION,
    "invalid_request_error": FailureKind.BAD_REQUEST,
    "not_found_error": FailureKind.BAD_REQUEST,
    "request_too_large": FailureKind.BAD_REQUEST,
}


@dataclass(frozen=True)
class AnthropicSettings:
    name: str
    base_url: str
    api_key: str
    default_model: str
    default_max_tokens: int

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> AnthropicSettings:
        read = Env(env)
        prefix = f"VB_PROVIDER_{provider_env_key(name)}_"
        base_url = read.str(prefix + "BASE_URL", DEFAULT_BASE_URL)
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}BASE_URL must be an http:// or https:// URL, got {base_url!r}")
        max_tokens = read.int(prefix + "MAX_TOKENS", DEFAULT_MAX_TOKENS)
        if max_tokens < 1:
            raise ConfigError(f"{prefix}MAX_TOKENS must be at least 1, got {max_tokens}")
        return cls(
            name=name,
            base_url=base_url,
            api_key=read.str(prefix + "API_KEY"),  # ConfigError naming the variable when missing
            default_model=read.str(prefix + "MODEL", ""),
            default_max_tokens=max_tokens,
        )


class AnthropicProvider(Provider):
    """One Anthropic Messages endpoint. The HTTP client is shared and owned by the caller."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str,
        default_model: str,
        client: httpx.AsyncClient,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.name = name
        self._default_model = default_model
        self._default_max_tokens = default_max_tokens
        headers = {"Accept": "application/json", "x-api-key": api_key, "anthropic-version": API_VERSION}
        self._http = HttpEndpoint(name, client, base_url.rstrip("/") + "/v1/messages", headers, self._failure)

    @classmethod
    def from_settings(cls, settings: AnthropicSettings, client: httpx.AsyncClient) -> AnthropicProvider:
        return cls(
            settings.name,
            settings.base_url,
            settings.api_key,
            settings.default_model,
            client,
            settings.default_max_tokens,
        )

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        model, payload = self._payload(request, stream=False)
        body = await self._http.post(payload, timeout)
        with reading_reply(self.name):
            blocks = body["content"]
            if not isinstance(blocks, list):
                raise TypeError("content is not a list")
            text = "".join(_block_text(block) for block in blocks)
            stop_reason = body.get("stop_reason")
            usage = body.get("usage")
            reported_model = body.get("model") or model
        return self._completion(request, text, reported_model, stop_reason, usage, usage)

    async def stream(
        self, request: CompletionRequest, timeout: float
    ) -> AsyncGenerator[StreamChunk | Completion, None]:
        model, payload = self._payload(request, stream=True)
        parts: list[str] = []
        stop_reason: str | None = None
        start_usage: Any = None  # message_start's: the input tokens
        final_usage: Any = None  # the last message_delta's: cumulative output tokens
        reported_model = model
        async with self._http.events(payload, timeout) as events:
            stopped = False
            # Every data payload names its own type, so `event:` lines add nothing.
            async for data in events:
                event = json_object(data, f"{self.name} sent a malformed stream: an event")
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event.get("delta")
                    if not isinstance(delta, dict):
                        raise _malformed_stream(self.name, "content_block_delta without a delta")
                    if delta.get("type") == "text_delta":
                        text = delta.get("text")
                        if not isinstance(text, str):
                            raise _malformed_stream(self.name, "text_delta without text")
                        if text:
                            parts.append(text)
                            yield StreamChunk(text)
                elif kind == "message_start":
                    message = event.get("message")
                    if not isinstance(message, dict):
                        raise _malformed_stream(self.name, "message_start without a message")
                    reported_model = message.get("model") or reported_model
                    start_usage = message.get("usage")
                elif kind == "message_delta":
                    delta = event.get("delta")
                    if isinstance(delta, dict) and delta.get("stop_reason"):
                        stop_reason = str(delta["stop_reason"])
                    if event.get("usage") is not None:
                        final_usage = event["usage"]
                elif kind == "message_stop":
                    stopped = True
                    break
                elif kind == "error":
                    raise _stream_error(self.name, event.get("error"))
                # ping, content_block_start/stop and types added later carry no text.
            if not stopped and stop_reason is None:
                raise _malformed_stream(self.name, "the stream ended before message_stop")
        yield self._completion(request, "".join(parts), reported_model, stop_reason, start_usage, final_usage)

    def _payload(self, request: CompletionRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        model = request.model or self._default_model
        if not model:
            raise ProviderError(FailureKind.BAD_REQUEST, f"{self.name}: no model given and no default model configured")
        system, messages = anthropic_messages(request.messages)
        if not messages:
            raise ProviderError(FailureKind.BAD_REQUEST, f"{self.name}: the conversation has no user or assistant text")
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_output_tokens or self._default_max_tokens,
            "messages": messages,
        }
        if system:
            payload["system"] = system
        if request.temperature is not None:
            payload["temperature"] = min(max(request.temperature, 0.0), 1.0)
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.stop:
            payload["stop_sequences"] = list(request.stop)
        if request.user is not None:
            payload["metadata"] = {"user_id": request.user}
        if stream:
            payload["stream"] = True
        return model, payload

    def _completion(
        self, request: CompletionRequest, text: str, model: Any, stop_reason: Any, start_usage: Any, final_usage: Any
    ) -> Completion:
        """`start_usage` is message_start's usage (the input), `final_usage` the last
        message_delta's (cumulative output, and in newer API versions the input restated);
        a plain reply passes its one usage as both."""

        def read_usage() -> tuple[int, int]:
            restated = isinstance(final_usage, dict) and final_usage.get("input_tokens") is not None
            return _input_tokens(final_usage if restated else start_usage), int(final_usage["output_tokens"])

        if start_usage is None and final_usage is None:
            # Anthropic always reports usage; a compatible server might not.
            usage = None
        elif start_usage is final_usage:
            usage = final_usage
        else:
            usage = {"message_start": start_usage, "message_delta": final_usage}
        truncated = stop_reason in _TRUNCATED
        return completion(
            self.name, request, text, model=model, truncated=truncated, usage=usage, read_usage=read_usage
        )

    def _failure(self, status: int, headers: httpx.Headers, content: bytes) -> ProviderError:
        detail = error_detail(content, _error_detail)
        message = f"{self.name} answered HTTP {status}" + (f" {detail}" if detail else "")
        # 529 is Anthropic's "overloaded"; 402 its billing_error.
        return status_failure(message, status, headers, authentication=(401, 402, 403))


def anthropic_messages(conversation: Iterable[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """The `system` text and the alternating `messages` for a gateway conversation (see the
    module docstring). Merged texts are joined by a blank line."""
    system: list[str] = []
    turns: list[tuple[str, list[str]]] = []
    for message in conversation:
        if not message.content.strip():
            continue
        if message.role == "system":
            system.append(message.content)
        elif turns and turns[-1][0] == message.role:
            turns[-1][1].append(message.content)
        else:
            turns.append((message.role, [message.content]))
    if turns and turns[0][0] == "assistant":
        turns.insert(0, ("user", [OPENING_USER_TURN]))
    return "\n\n".join(system), [{"role": role, "content": "\n\n".join(texts)} for role, texts in turns]


def _block_text(block: Any) -> str:
    """A text block's text; other blocks (thinking, tool use) add nothing to the reply."""
    if block["type"] != "text":
        return ""
    text = block["text"]
    if not isinstance(text, str):
        raise TypeError("a text block's text is not a string")
    return text


def _input_tokens(usage: Any) -> int:
    """Input tokens, counting prompt-cache writes and reads: they are input too."""
    cached = (usage.get(field) or 0 for field in ("cache_creation_input_tokens", "cache_read_input_tokens"))
    return int(usage["input_tokens"]) + sum(int(count) for count in cached)


def _malformed_stream(name: str, what: str) -> ProviderError:
    return ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent a malformed stream: {what}")


def _stream_error(name: str, error: Any) -> ProviderError:
    error_type, message = _error_fields(error)
    kind = _ERROR_TYPES.get(error_type, FailureKind.PROVIDER_ERROR)
    return ProviderError(kind, f"{name} stream error {error_type or 'of unknown type'}: {message}".rstrip(": "))


def _error_detail(error: Any) -> str:
    """`<type>: <message>` from Anthropic's `{"type": "error", "error": {"type", "message"}}`."""
    error_type, message = _error_fields(error)
    return f"{error_type}: {message}" if error_type else message


def _error_fields(error: Any) -> tuple[str, str]:
    if not isinstance(error, dict):
        return "", clip(error) if error is not None else ""
    error_type = error.get("type")
    message = error.get("message")
    return (
        error_type if isinstance(error_type, str) else "",
        clip(message) if message is not None else "",
    )
