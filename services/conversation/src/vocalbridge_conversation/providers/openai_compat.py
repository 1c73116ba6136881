"""An adapter for any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
Ollama, LiteLLM, …): POST {base_url}/chat/completions, plain or streamed (SSE).

Failures are classified for the delivery engine:
  timeout (connect, read or overall)      → TIMEOUT
  connection refused / reset / protocol   → UNAVAILABLE
  429                                     → RATE_LIMITED, retry_after from Retry-After
  408, 409, 5xx                           → UNAVAILABLE (503 may carry Retry-After too)
  400, 404, 422 and other 4xx             → BAD_REQUEST
  401, 403                                → AUTHENTICATION
  malformed JSON, missing fields, other   → PROVIDER_ERROR

Configuration: VB_OPENAI_PROVIDERS=name1,name2 and per name
VB_PROVIDER_<NAME>_BASE_URL (required, e.g. https://api.openai.com/v1),
VB_PROVIDER_<NAME>_API_KEY (optional; sent as `Authorization: Bearer …`),
VB_PROVIDER_<NAME>_MODEL (used when the agent names no model).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from vocalbridge_common.config import ConfigError, Env
from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    StreamChunk,
    count_prompt_tokens,
    count_tokens,
    provider_env_key,
)

_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class OpenAICompatibleSettings:
    name: str
    base_url: str
    api_key: str | None
    default_model: str

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> OpenAICompatibleSettings:
        read = Env(env)
        prefix = f"VB_PROVIDER_{provider_env_key(name)}_"
        base_url = read.str(prefix + "BASE_URL")  # ConfigError naming the variable when missing
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"{prefix}BASE_URL must be an http:// or https:// URL, got {base_url!r}")
        return cls(
            name=name,
            base_url=base_url,
            api_key=read.optional(prefix + "API_KEY"),
            default_model=read.str(prefix + "MODEL", ""),
        )


class OpenAICompatibleProvider(Provider):
    """One OpenAI-style endpoint. The HTTP client is shared and owned by the caller."""

    def __init__(
        self, name: str, base_url: str, api_key: str | None, default_model: str, client: httpx.AsyncClient
    ) -> None:
        self.name = name
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._default_model = default_model
        self._client = client

    @classmethod
    def from_settings(cls, settings: OpenAICompatibleSettings, client: httpx.AsyncClient) -> OpenAICompatibleProvider:
        return cls(settings.name, settings.base_url, settings.api_key, settings.default_model, client)

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        model, payload = self._payload(request, stream=False)
        try:
            # httpx's timeout bounds each phase (connect, each read); asyncio's the whole call.
            async with asyncio.timeout(timeout):
                response = await self._client.post(
                    self._url, json=payload, headers=self._headers(), timeout=httpx.Timeout(timeout)
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(FailureKind.TIMEOUT, f"{self.name} did not answer within {timeout:.3f}s") from None
        except httpx.HTTPError as error:
            raise _transport_failure(self.name, error) from None
        if not response.is_success:
            raise _status_failure(self.name, response.status_code, response.headers, response.content)
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            finish_reason = choice.get("finish_reason")
            usage = body.get("usage")
            reported_model = body.get("model") or model
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise ProviderError(
                FailureKind.PROVIDER_ERROR, f"{self.name} sent a malformed reply: {type(error).__name__}: {error}"
            ) from None
        prompt_tokens, completion_tokens = _usage(self.name, usage, request, text)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=str(reported_model),
            truncated=finish_reason == "length",
        )

    async def stream(
        self, request: CompletionRequest, timeout: float
    ) -> AsyncGenerator[StreamChunk | Completion, None]:
        model, payload = self._payload(request, stream=True)
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + timeout
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        reported_model = model
        try:
            async with asyncio.timeout_at(ends_at):
                context = self._client.stream(
                    "POST", self._url, json=payload, headers=self._headers(), timeout=httpx.Timeout(timeout)
                )
                response = await context.__aenter__()
            try:
                if not response.is_success:
                    async with asyncio.timeout_at(ends_at):
                        content = await response.aread()
                    raise _status_failure(self.name, response.status_code, response.headers, content)
                lines = response.aiter_lines()
                done = False
                while not done:
                    # The overall timeout covers only our own awaits, never the consumer's
                    # code that runs while this generator is suspended at a yield.
                    async with asyncio.timeout_at(ends_at):
                        try:
                            line = await anext(lines)
                        except StopAsyncIteration:
                            break
                    data = _sse_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        done = True
                        continue
                    chunk = _json_object(self.name, data)
                    if "error" in chunk:
                        message = f"{self.name} stream error: {_clip(chunk['error'])}"
                        raise ProviderError(FailureKind.PROVIDER_ERROR, message)
                    reported_model = chunk.get("model") or reported_model
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or ():
                        if not isinstance(choice, dict):
                            message = f"{self.name} sent a malformed stream chunk"
                            raise ProviderError(FailureKind.PROVIDER_ERROR, message)
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            parts.append(delta)
                            yield StreamChunk(delta)
                        finish_reason = choice.get("finish_reason") or finish_reason
                if not done and finish_reason is None:
                    raise ProviderError(FailureKind.PROVIDER_ERROR, f"{self.name} ended the stream before [DONE]")
            finally:
                await context.__aexit__(None, None, None)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(FailureKind.TIMEOUT, f"{self.name} did not finish within {timeout:.3f}s") from None
        except httpx.HTTPError as error:
            raise _transport_failure(self.name, error) from None
        text = "".join(parts)
        prompt_tokens, completion_tokens = _usage(self.name, usage, request, text)
        yield Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=str(reported_model),
            truncated=finish_reason == "length",
        )

    def _payload(self, request: CompletionRequest, *, stream: bool) -> tuple[str, dict[str, Any]]:
        model = request.model or self._default_model
        if not model:
            raise ProviderError(FailureKind.BAD_REQUEST, f"{self.name}: no model given and no default model configured")
        payload: dict[str, Any] = {
            "model": model,
            "messages": [{"role": message.role, "content": message.content} for message in request.messages],
        }
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if request.max_output_tokens is not None:
            payload["max_tokens"] = request.max_output_tokens
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return model, payload

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers


def _usage(name: str, usage: Any, request: CompletionRequest, text: str) -> tuple[int, int]:
    if usage is None:
        # Some OpenAI-compatible servers report no usage (or ignore stream_options).
        # Billing still needs numbers, so estimate them with the gateway's own
        # tokenizer, the same one the simulated providers use.
        return count_prompt_tokens(request.messages), count_tokens(text)
    try:
        prompt_tokens, completion_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    except (KeyError, TypeError, ValueError):
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent malformed usage: {_clip(usage)}") from None
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent negative token counts")
    return prompt_tokens, completion_tokens


def _sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for blank lines, comments and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _json_object(name: str, data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent a stream chunk that is not JSON") from None
    if not isinstance(value, dict):
        raise ProviderError(FailureKind.PROVIDER_ERROR, f"{name} sent a stream chunk that is not a JSON object")
    return value


def _transport_failure(name: str, error: httpx.HTTPError) -> ProviderError:
    if isinstance(error, httpx.TransportError):
        detail = f"{type(error).__name__}: {error}".rstrip(": ")
        return ProviderError(FailureKind.UNAVAILABLE, f"{name} unreachable: {detail}")
    return ProviderError(FailureKind.PROVIDER_ERROR, f"{name} HTTP error: {type(error).__name__}: {error}")


def _status_failure(name: str, status: int, headers: httpx.Headers, content: bytes) -> ProviderError:
    detail = _error_detail(content)
    message = f"{name} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return ProviderError(FailureKind.RATE_LIMITED, message, retry_after=parse_retry_after(headers))
    if status in (408, 409) or status >= 500:
        return ProviderError(FailureKind.UNAVAILABLE, message, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        return ProviderError(FailureKind.AUTHENTICATION, message)
    if 400 <= status < 500:
        return ProviderError(FailureKind.BAD_REQUEST, message)
    return ProviderError(FailureKind.PROVIDER_ERROR, message)


def _error_detail(content: bytes) -> str:
    """The upstream's own error message when it sent the usual `{"error": {"message": …}}`."""
    try:
        body = json.loads(content)
        error = body["error"]
        return _clip(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return _clip(content.decode("utf-8", "replace").strip())


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's extension) or `Retry-After`
    (delta-seconds or an HTTP date, RFC 9110 §10.2.3); None when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        seconds = _finite(raw_ms)
        if seconds is not None:
            return max(0.0, seconds / 1000.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    seconds = _finite(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _finite(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
