"""The turn use case with an in-memory store: a request whose key was taken over stores
and bills nothing, a failed store frees the key (SendMessage and StreamMessage alike),
and a turn reads only the history it does not hold yet, also when several processes
serve one session."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.unit.conversation.fakes import TENANT, FakeClock, turn_service
from vocalbridge_common.errors import Aborted
from vocalbridge_common.idempotency import KeyState, Replay
from vocalbridge_conversation.config import TurnSettings
from vocalbridge_conversation.delivery import Delta
from vocalbridge_conversation.domain.sessions import MessageStatus, Role
from vocalbridge_conversation.domain.turns import CompletedTurn, ProvidersExhausted, TurnRequest
from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    StreamChunk,
)
from vocalbridge_conversation.service.turns import TurnService

LEASE = timedelta(seconds=30)


class RecordingProvider(Provider):
    """Answers "reply N" and remembers every request; the first call waits for `gate` when
    one is set; while `down`, every call is refused as a bad request."""

    def __init__(self, name: str = "vendorA") -> None:
        self.name = name
        self.requests: list[CompletionRequest] = []
        self.gate: asyncio.Event | None = None
        self.down = False

    def _answer(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return Completion(f"reply {len(self.requests)}", prompt_tokens=5, completion_tokens=2, model="m1")

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        if self.down:
            raise ProviderError(FailureKind.BAD_REQUEST, "refused")
        if self.gate is not None and not self.requests:
            gate, self.gate = self.gate, None
            self.requests.append(request)
            await gate.wait()
            return Completion("the first, late reply", prompt_tokens=5, completion_tokens=4, model="m1")
        return self._answer(request)

    async def stream(self, request: CompletionRequest, timeout: float):
        completion = self._answer(request)
        for word in completion.text.split(" "):
            yield StreamChunk(word + " ")
        yield completion


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture
def new_service(store, clock, provider):
    """new_service() → a TurnService over the shared store, as another process would be (its own cache)."""

    def build() -> TurnService:
        return turn_service(store, provider, TurnSettings(idempotency_lease=LEASE), clock)

    return build


@pytest.fixture
def service(new_service) -> TurnService:
    return new_service()


def turn(session_name: str, content: str = "Hello", key: str = "k1") -> TurnRequest:
    return TurnRequest(session_name, content, key)


async def until(condition) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def test_a_request_whose_key_was_taken_over_stores_and_bills_nothing(
    service, store, clock, provider, session_name
):
    gate = provider.gate = asyncio.Event()
    first = asyncio.create_task(service.send_message(TENANT, turn(session_name), None))
    await until(lambda: len(provider.requests) == 1)  # the first request is with the provider

    clock.advance(LEASE)  # its lease runs out: a retry takes the key over and completes
    retry = await service.send_message(TENANT, turn(session_name), None)
    assert isinstance(retry, CompletedTurn)

    gate.set()  # the first request was alive after all, and finishes late
    with pytest.raises(Aborted) as caught:
        await first
    assert caught.value.reason == "IDEMPOTENCY_KEY_IN_USE"

    turns = store.turns
    assert len(turns.outbox) == 1  # billed once: the retry's turn
    assert [message.content for _, message in turns.messages] == ["Hello", retry.assistant_message.content]
    assert "the first, late reply" not in retry.assistant_message.content
    assert turns.records["k1"].state is KeyState.COMPLETED
    assert await service.send_message(TENANT, turn(session_name), None) == Replay(
        f"stored: {retry.assistant_message.content}".encode()
    )


async def test_a_failed_store_frees_the_key_for_a_retry(service, store, session_name):
    store.turns.fail_next_store = RuntimeError("the database went away")
    with pytest.raises(RuntimeError):
        await service.send_message(TENANT, turn(session_name), None)
    assert "k1" not in store.turns.records and store.turns.messages == [] and store.turns.outbox == []
    assert isinstance(await service.send_message(TENANT, turn(session_name), None), CompletedTurn)


async def test_a_failed_store_of_a_streamed_turn_frees_the_key_too(service, store, session_name):
    store.turns.fail_next_store = RuntimeError("the database went away")
    events = await service.stream_message(TENANT, turn(session_name), None)
    received = []
    with pytest.raises(RuntimeError):
        async for event in events:
            received.append(event)
    assert received and all(isinstance(event, Delta) for event in received)  # the text came, the store failed
    assert "k1" not in store.turns.records and store.turns.messages == [] and store.turns.outbox == []

    events = await service.stream_message(TENANT, turn(session_name), None)  # the retry runs the turn
    assert isinstance([event async for event in events][-1], CompletedTurn)
    assert len(store.turns.outbox) == 1


async def test_a_streamed_turn_whose_key_was_taken_over_stores_nothing(service, store, clock, session_name):
    events = await service.stream_message(TENANT, turn(session_name), None)
    first = await anext(events)
    assert isinstance(first, Delta)
    clock.advance(LEASE)
    assert isinstance(await service.send_message(TENANT, turn(session_name), None), CompletedTurn)
    with pytest.raises(Aborted):
        async for _ in events:
            pass
    assert len(store.turns.outbox) == 1 and len(store.turns.messages) == 2


async def test_a_turn_reads_only_the_history_it_does_not_hold(service, store, provider, session_name):
    for number in range(1, 4):
        await service.send_message(TENANT, turn(session_name, f"question {number}", f"k{number}"), None)
    # The first turn read from the start; each later one after the two messages of the turn before.
    assert store.turns.opened_after == [0, 2, 4]
    sent = [(message.role, message.content) for message in provider.requests[-1].messages]
    assert sent == [
        ("system", "Be brief."),
        ("user", "question 1"),
        ("assistant", "reply 1"),
        ("user", "question 2"),
        ("assistant", "reply 2"),
        ("user", "question 3"),
    ]


async def test_turns_served_by_several_processes_see_the_whole_history(new_service, store, provider, session_name):
    here, elsewhere = new_service(), new_service()
    await here.send_message(TENANT, turn(session_name, "one", "k1"), None)
    await elsewhere.send_message(TENANT, turn(session_name, "two", "k2"), None)  # knows nothing: reads it all
    await here.send_message(TENANT, turn(session_name, "three", "k3"), None)  # holds turn one: reads turn two
    assert store.turns.opened_after == [0, 0, 2]
    assert [message.content for message in provider.requests[-1].messages] == [
        "Be brief.",
        "one",
        "reply 1",
        "two",
        "reply 2",
        "three",
    ]


async def test_a_failed_user_message_takes_a_number_but_stays_out_of_the_history(
    service, store, provider, session_name
):
    await service.send_message(TENANT, turn(session_name, "one", "k1"), None)
    provider.down = True
    with pytest.raises(ProvidersExhausted):
        await service.send_message(TENANT, turn(session_name, "two", "k2"), None)
    assert "k2" not in store.turns.records  # freed for a retry
    provider.down = False
    await service.send_message(TENANT, turn(session_name, "three", "k3"), None)
    assert store.turns.opened_after == [0, 2, 3]
    assert [(seq, message.role, message.status) for seq, message in store.turns.messages][2] == (
        3,
        Role.USER,
        MessageStatus.FAILED,
    )
    assert [m.content for m in provider.requests[-1].messages if m.role != "system"] == ["one", "reply 1", "three"]
