"""The OpenAI-compatible API's use cases: a chat completion and the list of models.

A chat completion is a turn, run by the turn machinery (service.turns.TurnService): the
same idempotency rules, limits and budgets (reserved before any provider call), delivery
engine (retries, fallback, breaker), pricing and outbox, so it is billed exactly once like
a turn. What this adds is OpenAI's view of it: `model` names an agent, the request's
parameters override the agent's, and the response (also what a retry with the same
Idempotency-Key gets back) is OpenAI's JSON, encoded by the function the server passes in.

- Without a session (OpenAI's own, stateless way) the caller sends the whole conversation;
  the agent's current version answers it after its system prompt, and nothing is stored but
  the usage event (and, with an Idempotency-Key, the response for retries).
- With a session (`VocalBridge-Session`), the session keeps the history: the request carries
  only the new user message, which with the reply is stored as a turn of the session, and
  an Idempotency-Key is required, as for SendMessage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime

from vocalbridge_common.db import utcnow
from vocalbridge_common.idempotency import Replay
from vocalbridge_common.ids import new_id
from vocalbridge_conversation.agents_client import AgentDirectory
from vocalbridge_conversation.domain.chat import ChatRequest, Model
from vocalbridge_conversation.domain.turns import CompletedTurn, CompletionTurn, TurnEvent, TurnRequest
from vocalbridge_conversation.service.turns import COMPLETION_OPERATION, TurnService

# How long listing the models may wait on the agents service, when the caller set no shorter deadline.
MODELS_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class CompletionMeta:
    """What OpenAI's response says about the completion besides the turn: its id, its
    creation time (Unix seconds, the same in every chunk of a stream), the model as the
    caller named it, and the session it belongs to, if any."""

    id: str
    created: int
    model: str
    session: str | None


# OpenAI's response for a completed turn (what a retry with the same key gets back too).
CompletionEncoder = Callable[[CompletionMeta, CompletedTurn], bytes]


@dataclass(frozen=True)
class Completed:
    """A completion that ran whole."""

    meta: CompletionMeta
    turn: CompletedTurn


@dataclass(frozen=True)
class Streaming:
    """A completion whose reply streams: text deltas, restarts, then the stored turn."""

    meta: CompletionMeta
    events: AsyncGenerator[TurnEvent, None]


class CompletionService:
    def __init__(
        self,
        turns: TurnService,
        agents: AgentDirectory,
        encode: CompletionEncoder,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._turns = turns
        self._agents = agents
        self._encode = encode
        self._clock = clock
        self._monotonic = monotonic

    async def create(
        self,
        tenant_id: str,
        request: ChatRequest,
        *,
        session: str | None,
        idempotency_key: str | None,
        deadline: float | None,
    ) -> Completed | Streaming | Replay:
        """Runs the completion (whole, or streaming when the request asks to), or returns the
        stored response of the completion `idempotency_key` already ran. `session`: the
        session that keeps the history (None: stateless). `deadline` on the monotonic clock."""
        agent_id = request.agent()
        meta = CompletionMeta(
            id="chatcmpl-" + new_id("cmp").removeprefix("cmp_"),
            created=int(self._clock().timestamp()),
            model=request.model,
            session=session,
        )

        def encode(turn: CompletedTurn) -> bytes:
            return self._encode(meta, turn)

        outcome: CompletedTurn | AsyncGenerator[TurnEvent, None] | Replay
        if session is not None:
            turn = TurnRequest(
                session, request.session_content(), idempotency_key, overrides=request.overrides, agent_id=agent_id
            )
            if request.stream:
                outcome = await self._turns.stream_message(
                    tenant_id, turn, deadline, operation=COMPLETION_OPERATION, encode=encode
                )
            else:
                outcome = await self._turns.send_message(
                    tenant_id, turn, deadline, operation=COMPLETION_OPERATION, encode=encode
                )
        else:
            completion = CompletionTurn(agent_id, request.messages, idempotency_key, request.overrides)
            if request.stream:
                outcome = await self._turns.stream_complete(tenant_id, completion, deadline, encode)
            else:
                outcome = await self._turns.complete(tenant_id, completion, deadline, encode)
        if isinstance(outcome, Replay):
            return outcome
        if isinstance(outcome, CompletedTurn):
            return Completed(meta, outcome)
        return Streaming(meta, outcome)

    async def list_models(self, tenant_id: str, deadline: float | None) -> list[Model]:
        """Every agent of `tenant_id`, as a model: read from the agents service with the
        caller's identity, which is of that tenant (the agents service filters by it)."""
        timeout = MODELS_TIMEOUT_SECONDS
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - self._monotonic()))
        return await self._agents.models(timeout)
