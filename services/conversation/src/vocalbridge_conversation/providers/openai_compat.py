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
        self._default_model = default_model
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = HttpEndpoint(name, client, base_url.rstrip("/") + "/chat/completions", headers, self._failure)

    @classmethod
    def from_settings(cls, settings: OpenAICompatibleSettings, client: httpx.AsyncClient) -> OpenAICompatibleProvider:
        return cls(settings.name, settings.base_url, settings.api_key, settings.default_model, client)

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        model, payload = self._payload(request, stream=False)
        body = await self._http.post(payload, timeout)
        with reading_reply(self.name):
            choice = body["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError("message.content is not a string")
            finish_reason = choice.get("finish_reason")
            usage = body.get("usage")
            reported_model = body.get("model") or model
        return self._completion(request, text, reported_model, finish_reason, usage)

    async def stream(
        self, request: CompletionRequest, timeout: float
    ) -> AsyncGenerator[StreamChunk | Completion, None]:
        model, payload = self._payload(request, stream=True)
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        reported_model = model
        async with self._http.events(payload, timeout) as events:
            done = False
            async for data in events:
                if data == "[DONE]":
                    done = True
                    break
                chunk = json_object(data, f"{self.name} sent a stream chunk")
                if "error" in chunk:
                    message = f"{self.name} stream error: {clip(chunk['error'])}"
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
        yield self._completion(request, "".join(parts), reported_model, finish_reason, usage)

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
        if request.stop:
            payload["stop"] = list(request.stop)
        if request.user is not None:
            payload["user"] = request.user
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return model, payload

    def _completion(
        self, request: CompletionRequest, text: str, model: Any, finish_reason: str | None, usage: Any
    ) -> Completion:
        def read_usage() -> tuple[int, int]:
            return int(usage["prompt_tokens"]), int(usage["completion_tokens"])

        return completion(
            self.name,
            request,
            text,
            model=model,
            truncated=finish_reason == "length",
            usage=usage,
            read_usage=read_usage,
        )

    def _failure(self, status: int, headers: httpx.Headers, content: bytes) -> ProviderError:
        detail = error_detail(content, _error_message)
        return status_failure(
            f"{self.name} answered HTTP {status}" + (f": {detail}" if detail else ""), status, headers
        )


def _error_message(error: Any) -> str:
    """The upstream's own message from the usual `{"error": {"message": …}}`."""
    return clip(error["message"] if isinstance(error, dict) else error)
