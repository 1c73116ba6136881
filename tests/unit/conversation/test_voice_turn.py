"""A spoken turn (the use case behind the internal StreamVoiceTurn), with an in-memory store:
the reply is stored and billed exactly as the caller heard it — whole, or cut at the
character where the caller barged in (also while the reply is still being produced, which
stops the provider) — and a playback the voice service could not have sent is refused."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.conversation.fakes import (
    TENANT,
    FakeTurnStore,
    turn_service,
)
from vocalbridge_common.errors import InvalidArgument
from vocalbridge_common.idempotency import Replay
from vocalbridge_conversation.delivery import Delta, Restart
from vocalbridge_conversation.domain.sessions import MessageStatus
from vocalbridge_conversation.domain.turns import (
    CompletedTurn,
    Playback,
    ReplyGenerated,
    TurnRequest,
    VoiceInput,
    heard_reply,
)
from vocalbridge_conversation.providers.base import (
    Completion,
    CompletionRequest,
    FailureKind,
    Provider,
    ProviderError,
    StreamChunk,
    count_tokens,
)
from vocalbridge_conversation.service.turns import TurnService

REPLY = "Sure, a table for two. Shall I book the terrace? It is lovely tonight."
SPOKEN = VoiceInput(audio_seconds=2.345, speech_provider="")


class WordProvider(Provider):
    """Streams REPLY a word at a time. With `hold_after` words sent it waits (until its stream
    is closed), as a slow model mid-reply; `closed` tells whether its stream was closed."""

    name = "vendorA"

    def __init__(self, hold_after: int | None = None) -> None:
        self.hold_after = hold_after
        self.closed = False
        self.sent = 0

    async def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        raise AssertionError("spoken turns stream")

    async def stream(self, request: CompletionRequest, timeout: float):
        try:
            for word in REPLY.split(" "):
                if self.hold_after is not None and self.sent == self.hold_after:
                    await asyncio.Event().wait()
                self.sent += 1
                yield StreamChunk(word if self.sent == 1 else " " + word)
            yield Completion(REPLY, prompt_tokens=7, completion_tokens=count_tokens(REPLY), model="m1")
        finally:
            self.closed = True


def service_with(store: FakeTurnStore, provider: Provider) -> TurnService:
    return turn_service(store, provider)


def spoken_turn(session_name: str, key: str = "v1") -> TurnRequest:
    return TurnRequest(session_name, "A table for two, please.", key, SPOKEN)


class Listener:
    """The voice service's side: the playback, told when the test says so."""

    def __init__(self) -> None:
        self.playback: asyncio.Future[Playback] = asyncio.get_running_loop().create_future()

    async def heard(self) -> Playback:
        return await self.playback

    def tell(self, playback: Playback) -> None:
        self.playback.set_result(playback)


async def test_a_reply_heard_whole_is_stored_and_billed_whole(store, session_name):
    listener = Listener()
    events = await service_with(store, WordProvider()).voice_turn(
        TENANT, spoken_turn(session_name), None, listener.heard
    )
    received = []
    async for event in events:
        received.append(event)
        if isinstance(event, ReplyGenerated):
            listener.tell(Playback(interrupted=False))
    *deltas, generated, stored = received
    assert "".join(d.text for d in deltas) == REPLY and generated == ReplyGenerated(len(REPLY))
    assert isinstance(stored, CompletedTurn)
    assert stored.assistant_message.content == REPLY
    assert stored.assistant_message.status is MessageStatus.COMPLETE
    quantities = stored.usage.quantities
    assert quantities.tts_characters == len(REPLY) and quantities.completion_tokens == count_tokens(REPLY)
    assert str(quantities.audio_seconds) == "2.345"
    assert len(store.turns.outbox) == 1


@pytest.mark.parametrize("spoken", [0, 1, 22, len(REPLY) - 1])
async def test_a_barge_in_after_the_reply_cuts_the_stored_reply_and_its_bill_at_that_character(
    store, session_name, spoken
):
    listener = Listener()
    events = await service_with(store, WordProvider()).voice_turn(
        TENANT, spoken_turn(session_name), None, listener.heard
    )
    async for event in events:
        if isinstance(event, ReplyGenerated):
            listener.tell(Playback(interrupted=True, spoken_characters=spoken))
        last = event
    assert isinstance(last, CompletedTurn)
    kept = REPLY[:spoken]
    stored = [message for _, message in store.turns.messages]
    assert [m.content for m in stored] == ["A table for two, please.", kept]
    assert stored[1].status is MessageStatus.TRUNCATED
    quantities = last.usage.quantities
    assert (quantities.tts_characters, quantities.completion_tokens) == (spoken, count_tokens(kept))
    assert quantities.prompt_tokens == 7  # the provider's own count: the prompt was sent whole
    assert str(quantities.audio_seconds) == "2.345"
    assert last.assistant_message.content == kept and len(store.turns.outbox) == 1


async def test_a_barge_in_while_the_reply_is_produced_stops_the_provider_and_keeps_what_was_heard(store, session_name):
    provider = WordProvider(hold_after=4)  # "Sure, a table for" and then a long pause
    listener = Listener()
    events = await service_with(store, provider).voice_turn(TENANT, spoken_turn(session_name), None, listener.heard)
    text = ""
    async for event in events:
        if isinstance(event, Delta):
            text += event.text
            if text == "Sure, a table for":
                listener.tell(Playback(interrupted=True, spoken_characters=len("Sure, a")))
        last = event
    assert provider.closed and provider.sent == 4
    assert isinstance(last, CompletedTurn)
    assert last.assistant_message.content == "Sure, a"
    assert last.assistant_message.status is MessageStatus.TRUNCATED
    assert last.usage.quantities.tts_characters == len("Sure, a")
    assert last.usage.quantities.completion_tokens == count_tokens("Sure, a")


async def test_a_repeat_of_a_stored_spoken_turn_replays_it(store, session_name):
    service = service_with(store, WordProvider())
    listener = Listener()
    async for event in await service.voice_turn(TENANT, spoken_turn(session_name), None, listener.heard):
        if isinstance(event, ReplyGenerated):
            listener.tell(Playback(interrupted=True, spoken_characters=4))
    again = await service.voice_turn(TENANT, spoken_turn(session_name), None, Listener().heard)
    assert again == Replay(b"stored: Sure")
    assert len(store.turns.outbox) == 1


async def test_heard_whole_before_the_reply_is_whole_is_refused(store, session_name):
    provider = WordProvider(hold_after=2)
    listener = Listener()
    events = await service_with(store, provider).voice_turn(TENANT, spoken_turn(session_name), None, listener.heard)
    with pytest.raises(InvalidArgument) as caught:
        async for event in events:
            if isinstance(event, Delta) and provider.sent == 2:
                listener.tell(Playback(interrupted=False))
    assert caught.value.reason == "INVALID_PLAYBACK"
    assert provider.closed


def test_what_the_caller_heard():
    reply = "Hello there. How can I help?"
    assert heard_reply(reply, 0, Playback(interrupted=False), generated=True) is None
    assert heard_reply(reply, 0, Playback(True, 5, 0), generated=False) == "Hello"
    assert heard_reply(reply, 1, Playback(True, 5, 1), generated=True) == "Hello"
    # The voice service had not yet seen the latest restart: it spoke none of the reply as it stands.
    assert heard_reply(reply, 2, Playback(True, 20, 1), generated=True) == ""
    for wrong in (
        Playback(True, len(reply) + 1, 0),  # more than was sent
        Playback(True, -1, 0),
        Playback(True, 3, 1),  # a restart that was never sent
    ):
        with pytest.raises(InvalidArgument):
            heard_reply(reply, 0, wrong, generated=True)
    with pytest.raises(InvalidArgument):
        heard_reply(reply, 0, Playback(interrupted=False), generated=False)


async def test_a_restart_resets_what_the_count_refers_to(store, session_name):
    class FailingOnce(WordProvider):
        """Drops its first reply after a few words; the retry streams REPLY."""

        failed = False

        async def stream(self, request, timeout):
            if not self.failed:
                self.failed = True
                yield StreamChunk("Something else ")
                raise ProviderError(FailureKind.UNAVAILABLE, "dropped")
            async for event in super().stream(request, timeout):
                yield event

    listener = Listener()
    events = await service_with(store, FailingOnce()).voice_turn(
        TENANT, spoken_turn(session_name), None, listener.heard
    )
    restarts = 0
    async for event in events:
        if isinstance(event, Restart):
            restarts += 1
        if isinstance(event, ReplyGenerated):
            listener.tell(Playback(interrupted=True, spoken_characters=5, restarts=restarts))
        last = event
    assert restarts == 1 and isinstance(last, CompletedTurn)
    assert last.assistant_message.content == REPLY[:5]
