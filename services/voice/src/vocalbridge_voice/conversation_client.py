"""The conversation service as the voice service sees it: the one module that knows how a
spoken turn reaches it.

A session is looked up with the caller's own identity (another tenant's session is not
found). A spoken turn goes through conversation's internal StreamVoiceTurn, which requires
the internal scope no API key carries: the call carries an identity minted here for the
caller's tenant and key (`clients.internal_metadata`). The turn is sent, the reply streams
back as it is produced, and the voice service says what the caller heard of it: the whole
reply, or the characters spoken before a barge-in. The conversation service stores and
bills the reply cut exactly there, and answers with the stored turn.

What a turn returns that the voice service only passes on (the delivery record, the usage)
stays serialized here (`bytes`), so the use cases never handle protobuf.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vocalbridge.conversation.v1 import conversation_service_pb2 as pb
from vocalbridge.conversation.v1 import conversation_service_pb2_grpc, delivery_pb2
from vocalbridge_common.clients import forwarded_metadata, internal_metadata
from vocalbridge_common.errors import DomainError, FieldViolation, Unavailable
from vocalbridge_common.headers import IDEMPOTENCY_KEY_HEADER
from vocalbridge_common.identity import IdentitySigner


@dataclass(frozen=True)
class SessionRef:
    """The session as a turn needs it: its agent version."""

    name: str
    agent: str
    agent_version: int


@dataclass(frozen=True)
class StoredTurn:
    """A turn the conversation service stored."""

    user_message: str  # resource names
    assistant_message: str
    transcript: str  # the user message's content
    reply_text: str  # as stored: the reply as the caller heard it
    delivery: bytes  # conversation.v1.Delivery, serialized
    usage: bytes  # conversation.v1.Usage, serialized
    replayed: bool = False


@dataclass(frozen=True)
class ReplyDelta:
    """The next piece of the reply (after a restart: the first piece of a new reply)."""

    text: str
    restart: bool


@dataclass(frozen=True)
class ReplyComplete:
    """The reply is whole; the turn waits for what the caller heard of it."""

    characters: int


class RemoteError(DomainError):
    """An error the conversation service returned, passed on to the caller as it was."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        status = rpc_status.from_call(cast(grpc.Call, error))
        reason, metadata = "UNAVAILABLE", {}
        violations: list[FieldViolation] = []
        details: list[Message] = []
        for detail in status.details if status is not None else ():
            info, bad_request, delivery = (
                error_details_pb2.ErrorInfo(),
                error_details_pb2.BadRequest(),
                delivery_pb2.Delivery(),
            )
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Unpack(bad_request):
                violations = [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
            elif detail.Unpack(delivery):
                details.append(delivery)  # a failed turn's attempts
        super().__init__(
            error.details() or "conversation error",
            reason=reason,
            metadata=metadata,
            field_violations=violations,
            details=details,
        )
        self.code = error.code()


def _translate(error: grpc.aio.AioRpcError) -> DomainError:
    if rpc_status.from_call(cast(grpc.Call, error)) is None:
        # Not the conversation service's own answer (it was unreachable, or timed out).
        return Unavailable(
            f"the conversation service could not be reached ({error.code().name})", reason="CONVERSATION_UNAVAILABLE"
        )
    return RemoteError(error)


def _stored(result: pb.VoiceTurnResult) -> StoredTurn:
    turn = result.turn
    return StoredTurn(
        user_message=turn.user_message.name,
        assistant_message=turn.assistant_message.name,
        transcript=turn.user_message.content,
        reply_text=turn.assistant_message.content,
        delivery=turn.delivery.SerializeToString(),
        usage=turn.usage.SerializeToString(),
        replayed=result.replayed,
    )


class VoiceTurn:
    """One spoken turn in progress: its events as they come (`events`, `result`), and the one
    report of what the caller heard (`heard_all` or `interrupted`), after which the events end
    with the stored turn.

    The call's responses are read by a task of its own into a queue, so a reader of the events
    may be cancelled (a barge-in stops the reply being spoken) without cancelling the call."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._reported = False
        self._queue: asyncio.Queue[ReplyDelta | ReplyComplete | StoredTurn | DomainError] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name="voice-turn-reader")

    async def _read(self) -> None:
        try:
            while True:
                event = await self._call.read()
                if event is grpc.aio.EOF:
                    self._queue.put_nowait(
                        Unavailable("the conversation service ended a spoken turn without its result")
                    )
                    return
                kind = event.WhichOneof("event")
                if kind == "text_delta":
                    self._queue.put_nowait(ReplyDelta(event.text_delta, restart=False))
                elif kind == "restart":
                    self._queue.put_nowait(ReplyDelta("", restart=True))
                elif kind == "reply_generated":
                    self._queue.put_nowait(ReplyComplete(event.reply_generated.characters))
                elif kind == "result":
                    self._queue.put_nowait(_stored(event.result))
                    return
        except grpc.aio.AioRpcError as error:
            self._queue.put_nowait(_translate(error))

    async def next(self) -> ReplyDelta | ReplyComplete | StoredTurn:
        item = await self._queue.get()
        if isinstance(item, DomainError):
            self._queue.put_nowait(item)  # the call is over: every later read fails the same way
            raise item
        return item

    async def events(self) -> AsyncIterator[ReplyDelta | ReplyComplete | StoredTurn]:
        """The reply's deltas, ReplyComplete, and (once the playback is reported) the stored turn.
        Cancelling the iteration leaves the call running; iterating again resumes."""
        while True:
            item = await self.next()
            yield item
            if isinstance(item, StoredTurn):
                return

    async def result(self) -> StoredTurn:
        """The stored turn (after the playback is reported), skipping what is left of the reply."""
        while not isinstance(item := await self.next(), StoredTurn):
            pass
        return item

    async def heard_all(self) -> None:
        """The caller heard the whole reply (after ReplyComplete)."""
        await self._report(pb.ReplyPlayback(interrupted=False))

    async def interrupted(self, spoken_characters: int, restarts: int) -> None:
        """The caller spoke over the reply after `spoken_characters` characters of it (as it stood
        after `restarts` restarts) had been spoken."""
        await self._report(pb.ReplyPlayback(interrupted=True, spoken_characters=spoken_characters, restarts=restarts))

    async def _report(self, playback: pb.ReplyPlayback) -> None:
        if self._reported:
            return
        self._reported = True
        try:
            await self._call.write(pb.StreamVoiceTurnRequest(playback=playback))
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call is over already: its error comes with the events

    def cancel(self) -> None:
        """Ends the call (done: a no-op). Unreported, the conversation service keeps what it had
        produced, as for a caller who left a StreamMessage."""
        self._reader.cancel()
        self._call.cancel()


class ConversationTurns:
    def __init__(self, channel: grpc.aio.Channel, signer: IdentitySigner) -> None:
        self._stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        self._signer = signer

    async def session(self, name: str, timeout: float) -> SessionRef:
        try:
            session = await self._stub.GetSession(
                pb.GetSessionRequest(name=name), metadata=forwarded_metadata(), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from None
        return SessionRef(session.name, session.agent, session.agent_version)

    async def start(
        self,
        session: str,
        transcript: str,
        audio_seconds: float,
        speech_provider: str,
        idempotency_key: str,
        timeout: float,
    ) -> VoiceTurn:
        """Sends a spoken turn; its reply follows in `VoiceTurn.events`."""
        call = self._stub.StreamVoiceTurn(
            metadata=(*internal_metadata(self._signer), (IDEMPOTENCY_KEY_HEADER, idempotency_key)),
            timeout=timeout,
        )
        start = pb.VoiceTurnStart(
            session=session,
            content=transcript,
            voice=pb.VoiceTurn(audio_seconds=audio_seconds, speech_provider=speech_provider),
        )
        try:
            await call.write(pb.StreamVoiceTurnRequest(turn=start))
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from None
        except asyncio.InvalidStateError:
            pass  # refused at once: the reason comes with the first read
        return VoiceTurn(call)

    async def send(
        self,
        session: str,
        transcript: str,
        audio_seconds: float,
        speech_provider: str,
        idempotency_key: str,
        timeout: float,
    ) -> StoredTurn:
        """One spoken turn, whole: the caller will hear all of the reply. A repeat of an
        idempotent request returns the stored turn."""
        turn = await self.start(session, transcript, audio_seconds, speech_provider, idempotency_key, timeout)
        try:
            async for event in turn.events():
                if isinstance(event, ReplyComplete):
                    await turn.heard_all()
                elif isinstance(event, StoredTurn):
                    return event
        finally:
            turn.cancel()
        raise AssertionError("unreachable: events end with the stored turn or raise")
