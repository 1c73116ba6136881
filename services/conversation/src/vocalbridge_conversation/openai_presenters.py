"""OpenAI's JSON for the OpenAI-compatible API: a chat completion, its stream of chunks
(Server-Sent Events ending with `data: [DONE]`), the models list and the error object.

OpenAI's fields mean what they mean at OpenAI; `model` is the model as the caller named it
(the agent). What VocalBridge adds is one object, `vocalbridge`, on the completion and on a
stream's last choice chunk: the delivery record (the provider and model that answered,
whether the fallback was used, each attempt), the cost in micro-dollars and, in a session,
the stored reply's name. OpenAI's SDKs keep unknown fields (`completion.vocalbridge`).

A completion's JSON is also what its idempotency key stores: a replay returns those bytes as
they were, or, to a streaming request, replays them as chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from vocalbridge_common.errors import DomainError
from vocalbridge_common.openai_errors import openai_error, openai_error_headers
from vocalbridge_conversation.delivery import DeliveryResult, Delta
from vocalbridge_conversation.domain.chat import Model
from vocalbridge_conversation.domain.turns import CompletedTurn, ProvidersExhausted
from vocalbridge_conversation.service.completions import CompletionMeta

JSON = "application/json"
EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"

Document = dict[str, Any]


def _dumps(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def event(document: object) -> bytes:
    """One Server-Sent Event carrying `document` as JSON."""
    return b"data: " + _dumps(document) + b"\n\n"


# -- a completion ------------------------------------------------------------------------


def _attempts(delivery: DeliveryResult) -> list[Document]:
    return [
        {
            "provider": attempt.provider,
            "outcome": attempt.outcome.value,
            "latency_ms": round(attempt.latency * 1000, 3),
            **({"error": attempt.error_message} if attempt.error_message else {}),
        }
        for attempt in delivery.attempts
    ]


def extension(meta: CompletionMeta, turn: CompletedTurn) -> Document:
    """The `vocalbridge` object: how the completion was delivered and what it cost."""
    delivery = turn.delivery
    return {
        "provider": delivery.provider,
        "model": delivery.model,
        "fallback_used": delivery.fallback_used,
        "attempts": _attempts(delivery),
        "latency_ms": round(delivery.latency * 1000, 3),
        "cost_micros": turn.usage.cost_micros,
        "session": meta.session,
        "message": turn.assistant_message.name if meta.session else None,
    }


def _usage(turn: CompletedTurn) -> Document:
    quantities = turn.usage.quantities
    return {
        "prompt_tokens": quantities.prompt_tokens,
        "completion_tokens": quantities.completion_tokens,
        "total_tokens": quantities.prompt_tokens + quantities.completion_tokens,
    }


def _finish_reason(turn: CompletedTurn) -> str:
    completion = turn.delivery.completion
    return "length" if completion is not None and completion.truncated else "stop"


def completion(meta: CompletionMeta, turn: CompletedTurn) -> Document:
    """OpenAI's `chat.completion` object for a completed turn."""
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": turn.assistant_message.content, "refusal": None},
                "logprobs": None,
                "finish_reason": _finish_reason(turn),
            }
        ],
        "usage": _usage(turn),
        "system_fingerprint": None,
        "vocalbridge": extension(meta, turn),
    }


def completion_bytes(meta: CompletionMeta, turn: CompletedTurn) -> bytes:
    """What a completion returns and its idempotency key stores (service.completions' encoder)."""
    return _dumps(completion(meta, turn))


# -- a stream of chunks --------------------------------------------------------------------


class ChunkWriter:
    """The chunks of one streamed completion, sharing its id, time and model. The role goes
    with the first text (the response commits to 200 only once a provider answers, so a
    completion no provider could answer still gets its error status); with `include_usage`
    every chunk has `"usage": null` and a last chunk without choices carries the usage."""

    def __init__(self, meta: CompletionMeta | Document, include_usage: bool) -> None:
        if isinstance(meta, CompletionMeta):
            self._head: Document = {"id": meta.id, "created": meta.created, "model": meta.model}
        else:
            self._head = {"id": meta["id"], "created": meta["created"], "model": meta["model"]}
        self._include_usage = include_usage
        self._role_sent = False

    def _chunk(self, choices: list[Document], **extra: object) -> Document:
        chunk: Document = {
            "id": self._head["id"],
            "object": "chat.completion.chunk",
            "created": self._head["created"],
            "model": self._head["model"],
            "system_fingerprint": None,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _delta(self, content: str | None) -> Document:
        delta: Document = {}
        if not self._role_sent:
            delta["role"] = "assistant"
            self._role_sent = True
        if content is not None:
            delta["content"] = content
        return delta

    def text(self, content: str) -> bytes:
        return event(
            self._chunk([{"index": 0, "delta": self._delta(content), "logprobs": None, "finish_reason": None}])
        )

    def finish(self, finish_reason: str, extension: Document, usage: Document) -> bytes:
        """The last choice chunk (with `vocalbridge`), the usage chunk if asked for, and [DONE]."""
        delta = self._delta("" if not self._role_sent else None)
        out = event(
            self._chunk(
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], vocalbridge=extension
            )
        )
        if self._include_usage:
            out += event(self._chunk([], usage=usage))
        return out + DONE

    def finish_turn(self, meta: CompletionMeta, turn: CompletedTurn) -> bytes:
        return self.finish(_finish_reason(turn), extension(meta, turn), _usage(turn))

    def delta(self, delta: Delta) -> bytes:
        return self.text(delta.text)


def replay_chunks(stored: bytes, include_usage: bool) -> bytes:
    """A stored completion as a stream: its whole text in one chunk, then the last ones."""
    document = json.loads(stored)
    choice = document["choices"][0]
    writer = ChunkWriter(document, include_usage)
    text = writer.text(choice["message"]["content"])
    return text + writer.finish(choice["finish_reason"], document.get("vocalbridge") or {}, document["usage"])


# -- models --------------------------------------------------------------------------------


def models_bytes(tenant_name: str, models: Iterable[Model]) -> bytes:
    """OpenAI's models list: one model per agent, its id the agent's resource name."""
    return _dumps(
        {
            "object": "list",
            "data": [
                {
                    "id": model.id,
                    "object": "model",
                    "created": int(model.create_time.timestamp()),
                    "owned_by": tenant_name,
                    "display_name": model.display_name,
                }
                for model in models
            ],
        }
    )


# -- errors --------------------------------------------------------------------------------


def _message(error: DomainError) -> str | None:
    """A completion no provider could answer names its attempts (gRPC clients find them in
    the status details; OpenAI's error has no place for them but its message)."""
    if isinstance(error, ProvidersExhausted) and error.delivery.attempts:
        tried = ", ".join(f"{a.provider} {a.outcome.value.lower()}" for a in error.delivery.attempts)
        return f"no provider could answer this request (attempts: {tried})"
    return None


def error_headers(error: DomainError) -> dict[str, str]:
    """The OpenAI error headers of a refusal (vocalbridge_common.openai_errors)."""
    return openai_error_headers(error, _message(error))


def error_event(error: DomainError) -> bytes:
    """An error after the stream began (its status is 200 by then): OpenAI's error object as
    the last event, without [DONE]; OpenAI's SDKs raise it as an APIError."""
    return event(openai_error(error, _message(error)))
