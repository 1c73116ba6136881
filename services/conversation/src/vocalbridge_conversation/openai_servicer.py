"""OpenAIService over gRPC: raw HTTP bodies (google.api.HttpBody) ⇄ domain, nothing else.

The request body is read into a domain ChatRequest (domain.chat); the use case's results
become OpenAI's JSON (openai_presenters). A refusal is a domain error like any other (the
interceptor turns it into a google.rpc.Status); here it also gets its OpenAI rendering in
the `x-vb-openai-error` trailer, which the edge puts into the response body, and
`x-should-retry: false` where retrying cannot help.

A completion answers with one HttpBody (JSON), or, streamed, with Server-Sent Events: the
response commits to 200 with the first text, so anything refused before that (bad input,
limits, no provider able to answer) gets its own HTTP status. An error after that ends the
stream with an OpenAI error event instead of `data: [DONE]`; a provider failing mid-reply
(the delivery engine would start the reply again elsewhere) ends it the same way, since
OpenAI's chunks cannot take back text: the turn is then released, billing nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody

from vocalbridge.openai.v1 import openai_service_pb2 as pb
from vocalbridge.openai.v1 import openai_service_pb2_grpc
from vocalbridge_common.context import current_tenant_id
from vocalbridge_common.errors import DomainError, Unavailable
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER, SESSION_HEADER
from vocalbridge_common.idempotency import Replay
from vocalbridge_conversation import openai_presenters as present
from vocalbridge_conversation.delivery import Delta, Restart
from vocalbridge_conversation.domain.chat import parse_chat_request
from vocalbridge_conversation.service.completions import Completed, CompletionService

Context = grpc.aio.ServicerContext[Any, Any]

REPLAYED = ((IDEMPOTENT_REPLAYED_HEADER, "true"),)


def _header(context: Context, name: str) -> str | None:
    found = None
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            found = value  # the last one, if a client sent several
    return found


def _deadline(context: Context) -> float | None:
    """The caller's deadline on the monotonic clock the delivery engine uses."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


@contextlib.contextmanager
def _openai_errors() -> Iterator[None]:
    """A refusal carries its OpenAI rendering to the edge (and to gRPC clients)."""
    try:
        yield
    except DomainError as error:
        error.headers.update(present.error_headers(error))
        raise


class OpenAIServicer(openai_service_pb2_grpc.OpenAIServiceServicer):
    def __init__(self, completions: CompletionService) -> None:
        self._completions = completions

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[HttpBody]:
        with _openai_errors():
            chat = parse_chat_request(request.body.data)
            outcome = await self._completions.create(
                current_tenant_id(),
                chat,
                session=_header(context, SESSION_HEADER) or None,
                idempotency_key=_header(context, IDEMPOTENCY_KEY_HEADER),
                deadline=_deadline(context),
            )
        if isinstance(outcome, Replay):
            await context.send_initial_metadata(REPLAYED)
            if chat.stream:
                yield HttpBody(
                    content_type=present.EVENT_STREAM, data=present.replay_chunks(outcome.response, chat.include_usage)
                )
            else:
                yield HttpBody(content_type=present.JSON, data=outcome.response)
            return
        if isinstance(outcome, Completed):
            yield HttpBody(content_type=present.JSON, data=outcome.turn.stored_response)
            return
        writer = present.ChunkWriter(outcome.meta, chat.include_usage)
        started = False
        async with contextlib.aclosing(outcome.events) as events:
            try:
                async for event in events:
                    if isinstance(event, Delta):
                        started = True
                        yield HttpBody(content_type=present.EVENT_STREAM, data=writer.delta(event))
                    elif isinstance(event, Restart):
                        # Closing the events (leaving this block) releases the turn: nothing billed.
                        raise Unavailable(
                            "the provider failed in the middle of the reply; retry the request",
                            reason="PROVIDER_STREAM_INTERRUPTED",
                        )
                    else:
                        data = writer.finish_turn(outcome.meta, event)
                        yield HttpBody(content_type=present.EVENT_STREAM, data=data)
            except DomainError as error:
                if not started:
                    error.headers.update(present.error_headers(error))
                    raise
                yield HttpBody(content_type=present.EVENT_STREAM, data=present.error_event(error))
                raise
            except Exception:
                if started:  # the interceptor logs it; the client learns only that it failed
                    unexpected = DomainError("internal error; the request id identifies it in the logs")
                    yield HttpBody(content_type=present.EVENT_STREAM, data=present.error_event(unexpected))
                raise

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> HttpBody:
        tenant_id = current_tenant_id()
        with _openai_errors():
            models = await self._completions.list_models(tenant_id, _deadline(context))
        return HttpBody(content_type=present.JSON, data=present.models_bytes(f"tenants/{tenant_id}", models))
