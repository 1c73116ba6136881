"""Test doubles: for the delivery engine, a fake clock whose sleep only advances time
and providers that play a script of outcomes; for idempotency keys, a wall clock that
only moves when told and an in-memory key store; for turns, an in-memory turn store and
agents directory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tests.unit.common.idempotency_fakes import FakeClock, FakeIdempotencyStore
from vocalbridge_common.idempotency import IdempotencyRecord
from vocalbridge_conversation.config import TurnSettings
from vocalbridge_conversation.delivery import BreakerRegistry, DeliveryEngine, RetryPolicy
from vocalbridge_conversation.domain.history import HistoryMessage, OpenedTurn
from vocalbridge_conversation.domain.sessions import HISTORY_STATUSES, Message, SessionState
from vocalbridge_conversation.domain.turns import AgentConfig
from vocalbridge_conversation.domain.usage import OutboxEntry
from vocalbridge_conversation.price_book import PriceBook
from vocalbridge_conversation.providers.base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    ProviderRegistry,
    StreamChunk,
)
from vocalbridge_conversation.service.turns import TurnService

# A tenant and an agent version for turn tests.
TENANT = "ten_01m87srx2qrnbdce06p98dr0wk"
AGENT = AgentConfig(
    agent_id="agt_01m87srx2qrnbdce06p98dr0wk",
    version=1,
    system_prompt="Be brief.",
    primary_provider="vendorA",
    fallback_provider=None,
    model="",
    temperature=None,
    top_p=None,
    max_output_tokens=None,
)

REQUEST = CompletionRequest(
    model="",
    messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there")),
    temperature=None,
    top_p=None,
    max_output_tokens=None,
)


class FakeTime:
    """A monotonic clock that only moves when someone sleeps or advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MaxRandom:
    """A stand-in for random.Random whose uniform() always returns the upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass(frozen=True)
class Stall:
    """The provider takes the whole timeout it was given, then reports TIMEOUT."""


@dataclass(frozen=True)
class Partial:
    """Streaming: send these deltas, then fail with `error` (complete(): just fail)."""

    deltas: Sequence[str]
    error: ProviderError


@dataclass(frozen=True)
class NoFinal:
    """Streaming: send these deltas and end without a final Completion."""

    deltas: Sequence[str]


Step = str | ProviderError | Stall | Partial | NoFinal


def fail(kind: FailureKind, retry_after: float | None = None) -> ProviderError:
    return ProviderError(kind, f"scripted {kind.value}", retry_after=retry_after)


@dataclass
class ScriptedProvider(Provider):
    """Each call plays the next step of `script` (the last step repeats). Every call
    takes `latency` seconds of fake time, or its whole timeout and then TIMEOUT when
    `latency` is longer (as a well-behaved provider would)."""

    name: str
    script: list[Step]
    time: FakeTime
    latency: float = 0.01
    model: str = ""
    calls: list[float] = field(default_factory=list)  # the timeout given to each call
    closed_streams: int = 0

    def _next(self, timeout: float) -> Step:
        self.calls.append(timeout)
        return self.script[min(len(self.calls) - 1, len(self.script) - 1)]

    def _completion(self, text: str) -> Completion:
        model = self.model or f"{self.name}-m1"
        return Completion(text, prompt_tokens=3, completion_tokens=len(text.split()), model=model)

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        step = self._next(timeout)
        if isinstance(step, Stall) or self.latency > timeout:
            self.time.advance(timeout)
            raise ProviderError(FailureKind.TIMEOUT, "stalled")
        self.time.advance(self.latency)
        if isinstance(step, Partial):
            raise step.error
        if isinstance(step, ProviderError):
            raise step
        if isinstance(step, NoFinal):
            raise AssertionError("NoFinal is for streams")
        return self._completion(step)

    async def stream(self, request: CompletionRequest, timeout: float) -> AsyncIterator[StreamChunk | Completion]:
        step = self._next(timeout)
        try:
            if isinstance(step, Stall) or self.latency > timeout:
                self.time.advance(timeout)
                raise ProviderError(FailureKind.TIMEOUT, "stalled")
            self.time.advance(self.latency)
            if isinstance(step, ProviderError):
                raise step
            if isinstance(step, (Partial, NoFinal)):
                for delta in step.deltas:
                    yield StreamChunk(delta)
                if isinstance(step, Partial):
                    raise step.error
                return
            for word in step.split(" "):
                yield StreamChunk(word + " ")
            yield self._completion(step)
        finally:
            self.closed_streams += 1


def make_engine(
    time: FakeTime,
    *providers: Provider,
    policy: RetryPolicy | None = None,
    threshold: int = 5,
    reset_timeout: float = 10.0,
    rng=None,
) -> tuple[DeliveryEngine, BreakerRegistry]:
    breakers = BreakerRegistry(failure_threshold=threshold, reset_timeout=reset_timeout, clock=time.clock)
    engine = DeliveryEngine(
        ProviderRegistry(providers),
        policy or RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0, attempt_timeout=5.0),
        breakers,
        sleep=time.sleep,
        clock=time.clock,
        rng=rng if rng is not None else random.Random(7),
    )
    return engine, breakers


# --- Idempotency keys: the common library's fakes ----------------------------------------

__all__ = ["FakeClock", "FakeIdempotencyStore"]


# --- Turns --------------------------------------------------------------------------------


class FakeTurns(FakeIdempotencyStore):
    """One tenant's sessions, messages, keys and outbox in memory, with the turn
    repository's semantics (service.turns.TurnTransaction): messages numbered per session,
    and a turn stored or failed only while its claim still holds its key unfinished."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, SessionState] = {}
        self.messages: list[tuple[int, Message]] = []
        self.outbox: list[OutboxEntry] = []
        self.opened_after: list[int] = []  # the after_seq of every open_turn and read_history
        self.fail_next_store: BaseException | None = None

    def add_session(self, session_id: str, agent_id: str = "agt_x", version: int = 1) -> None:
        self.sessions[session_id] = SessionState(session_id, agent_id, version, 0)

    def _history(self, session_id: str, after_seq: int, limit: int) -> tuple[HistoryMessage, ...]:
        found = [
            HistoryMessage.of(seq, message.role, message.content)
            for seq, message in self.messages
            if message.session_id == session_id and seq > after_seq and message.status in HISTORY_STATUSES
        ]
        return tuple(found[-limit:])

    async def open_turn(self, session_id: str, claim: IdempotencyRecord, after_seq: int, limit: int):
        self.opened_after.append(after_seq)
        state = self.sessions.get(session_id)
        if state is None:
            return None
        if not await self.insert_if_absent(claim):
            return OpenedTurn(state, claimed=False, history=())
        return OpenedTurn(state, claimed=True, history=self._history(session_id, after_seq, limit))

    async def read_history(self, session_id: str, after_seq: int, limit: int):
        self.opened_after.append(after_seq)
        state = self.sessions.get(session_id)
        if state is None:
            return None
        return OpenedTurn(state, claimed=True, history=self._history(session_id, after_seq, limit))

    def _write(self, messages, when) -> int:
        session_id = messages[0].session_id
        state = self.sessions[session_id]
        first = state.last_seq + 1
        for offset, message in enumerate(messages):
            self.messages.append((first + offset, message))
        self.sessions[session_id] = dataclasses.replace(state, last_seq=state.last_seq + len(messages))
        return state.last_seq + len(messages)

    async def store_turn(self, record_id, response, messages, event, when):
        if self.fail_next_store is not None:
            error, self.fail_next_store = self.fail_next_store, None
            raise error
        if not await self.complete(record_id, response):
            return None
        if event is not None:
            self.outbox.append(event)
        return self._write(messages, when)

    async def fail_turn(self, record_id, message, when):
        if not await self.release(record_id):
            return None
        return self._write([message], when)


class FakeTurnStore:
    """Hands out the one FakeTurns (no isolation between transactions is needed in unit tests)."""

    def __init__(self) -> None:
        self.turns = FakeTurns()
        self.transactions = 0

    @contextlib.asynccontextmanager
    async def transaction(self, tenant_id: str):
        self.transactions += 1
        yield self.turns


class FakeAgents:
    """The agents service as the turn sees it: one agent config for every version."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    async def version(self, tenant_id: str, agent_id: str, version: int, timeout: float) -> AgentConfig:
        return dataclasses.replace(self.config, agent_id=agent_id, version=version)


def turn_service(
    store: FakeTurnStore, provider: Provider, settings: TurnSettings | None = None, clock: FakeClock | None = None
) -> TurnService:
    """A TurnService over `store` and one provider, on fake time, with its own history cache
    (as another process would be); a stored response is "stored: <reply>"."""
    time = FakeTime()
    engine, _ = make_engine(time, provider)
    return TurnService(
        store,
        FakeAgents(AGENT),
        engine,
        PriceBook(),
        settings or TurnSettings(),
        encode_response=lambda turn: f"stored: {turn.assistant_message.content}".encode(),
        encode_usage_event=lambda record: record.event_id.encode(),
        clock=clock or FakeClock(),
        monotonic=time.clock,
    )
