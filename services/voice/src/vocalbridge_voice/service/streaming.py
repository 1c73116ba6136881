"""StreamingConverse: a spoken conversation over one stream, turn after turn.

The caller's audio goes, chunk by chunk, to the stream's speech-to-text worker (voice
activity, end of utterance, partial transcripts). Each finished utterance becomes a spoken
turn of the conversation service (conversation_client.VoiceTurn); its reply text is passed
on as it comes and spoken a sentence at a time.

Pacing. The server keeps a model of the caller's playback: audio plays from when it is sent,
one piece after the other. The next piece of the reply is synthesized and sent only when
what was sent is within `reply_lead` seconds of running out, so what has been sent stays
close to what the caller has heard. After `pacing_limit` seconds the rest of a reply is sent
at once (the turn's call has a deadline).

Barge-in is exact. When the caller starts speaking while a reply is being spoken, the reply
stops: nothing more is synthesized or sent, and the conversation service is told how many
characters of the reply had been sent as audio (ReplyInterrupted carries that text). It
stores the reply cut at exactly that character, marked truncated, and bills exactly that:
the completion tokens of the text kept, the characters spoken, the caller's audio seconds.
A reply spoken to its end is stored whole (TurnCompleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from vocalbridge_common.ids import new_id
from vocalbridge_voice.conversation_client import ConversationTurns, ReplyComplete, ReplyDelta, StoredTurn, VoiceTurn
from vocalbridge_voice.domain.audio import Pcm, validate_stream_rate
from vocalbridge_voice.domain.text import SentenceSplitter, speakable
from vocalbridge_voice.domain.turns import Latency, UtteranceTooLong, validate_session_name
from vocalbridge_voice.domain.voices import VoiceChoice
from vocalbridge_voice.engines.pool import StreamHandle
from vocalbridge_voice.service.converse import ConverseService
from vocalbridge_voice.service.speech import Capacity, Speech

# A turn's time limit with the conversation service, pacing included.
TURN_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class StreamConfig:
    session: str
    sample_rate: int


# -- what the stream produces ---------------------------------------------------------


@dataclass(frozen=True)
class SpeechStarted:
    audio_offset: float


@dataclass(frozen=True)
class PartialTranscript:
    transcript: str


@dataclass(frozen=True)
class UtteranceEnded:
    transcript: str
    audio_seconds: float


@dataclass(frozen=True)
class ReplyText:
    text_delta: str
    restart: bool


@dataclass(frozen=True)
class ReplyAudio:
    audio: Pcm
    text: str


@dataclass(frozen=True)
class ReplyInterrupted:
    spoken_text: str


@dataclass(frozen=True)
class TurnCompleted:
    turn: StoredTurn
    latency: Latency


StreamEvent = (
    SpeechStarted | PartialTranscript | UtteranceEnded | ReplyText | ReplyAudio | ReplyInterrupted | TurnCompleted
)


@dataclass
class _Reply:
    """The reply being spoken: its turn with the conversation service, the task speaking it, and
    the pieces of its text (since the last restart) whose audio was sent."""

    turn: VoiceTurn
    task: asyncio.Task[None] | None = None
    spoken: list[str] = field(default_factory=list)
    restarts: int = 0

    @property
    def spoken_text(self) -> str:
        return "".join(self.spoken)


class StreamingService:
    def __init__(
        self,
        converse: ConverseService,
        turns: ConversationTurns,
        speech: Speech,
        capacity: Capacity,
        *,
        reply_lead: float,
        pacing_limit: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._converse = converse
        self._turns = turns
        self._speech = speech
        self._capacity = capacity
        self._lead = reply_lead
        self._pacing_limit = pacing_limit
        self._monotonic = monotonic

    async def run(
        self, tenant_id: str, config: StreamConfig, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[StreamEvent]:
        """The events of the stream until the caller's audio ends and the last reply is spoken."""
        validate_session_name(config.session, "config.session")
        validate_stream_rate(config.sample_rate)
        async with self._capacity.slot():
            session, voice = await self._converse.agent_voice(tenant_id, config.session, TURN_TIMEOUT_SECONDS)
            handle = await self._speech.open_stream(config.sample_rate)
            events: asyncio.Queue[StreamEvent | BaseException | None] = asyncio.Queue()
            listener = asyncio.create_task(self._listen(session, voice, handle, audio, events))
            try:
                while (item := await events.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
                await asyncio.shield(self._speech.close_stream(handle))

    async def _listen(
        self,
        session: str,
        voice: VoiceChoice,
        handle: StreamHandle,
        audio: AsyncIterator[bytes],
        events: asyncio.Queue[StreamEvent | BaseException | None],
    ) -> None:
        reply: _Reply | None = None
        # Each turn of the stream runs once under a key of its own.
        stream_key = new_id("vst")
        turn_number = 0

        async def interrupt() -> None:
            """Barge-in: the reply in progress stops where it is, and is stored as heard."""
            nonlocal reply
            if reply is not None and reply.task is not None and not reply.task.done():
                await self._stop(reply)
                events.put_nowait(ReplyInterrupted(reply.spoken_text))
            reply = None

        try:
            async for chunk in audio:
                if not chunk:
                    continue
                for event in await self._speech.feed_stream(handle, chunk):
                    kind = event[0]
                    if kind == "speech_started":
                        await interrupt()  # barge-in, if a reply is being spoken
                        events.put_nowait(SpeechStarted(float(event[1])))
                    elif kind == "partial":
                        events.put_nowait(PartialTranscript(str(event[1])))
                    elif kind == "too_long":
                        raise UtteranceTooLong(float(event[1]))
                    elif kind == "ended":
                        transcript, seconds = str(event[1]).strip(), float(event[2])
                        events.put_nowait(UtteranceEnded(transcript, seconds))
                        if transcript:
                            await interrupt()
                            turn_number += 1
                            turn = await self._turns.start(
                                session,
                                transcript,
                                seconds,
                                self._speech.speech_provider,
                                f"{stream_key}-{turn_number}",
                                TURN_TIMEOUT_SECONDS,
                            )
                            reply = _Reply(turn)
                            reply.task = asyncio.create_task(self._reply(reply, voice, events))
            if reply is not None and reply.task is not None:
                await reply.task  # the caller stopped sending: finish the reply in progress
            events.put_nowait(None)
        except asyncio.CancelledError:
            if reply is not None:
                # The caller went away: what it heard is what was sent.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop(reply))
            raise
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which raises it
            if reply is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._stop(reply))
            events.put_nowait(error)

    async def _stop(self, reply: _Reply) -> StoredTurn:
        """Stops speaking `reply`, tells the conversation service what was spoken, and returns
        the turn it stored: cut exactly there (or whole, when all of it had been sent)."""
        if reply.task is not None and not reply.task.done():
            reply.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reply.task
        try:
            await reply.turn.interrupted(len(reply.spoken_text), reply.restarts)
            return await reply.turn.result()
        finally:
            reply.turn.cancel()

    async def _reply(
        self, reply: _Reply, voice: VoiceChoice, events: asyncio.Queue[StreamEvent | BaseException | None]
    ) -> None:
        started = self._monotonic()
        first_token: float | None = None
        first_audio: float | None = None
        playback_end = started  # when the caller will have heard everything sent
        splitter = SentenceSplitter()

        async def speak(piece: str) -> None:
            nonlocal playback_end, first_audio
            if not speakable(piece):
                reply.spoken.append(piece)
                return
            now = self._monotonic()
            if now - started < self._pacing_limit and playback_end - now > self._lead:
                await asyncio.sleep(playback_end - now - self._lead)
            audio = await self._speech.synthesize(voice, piece, urgent=first_audio is None)
            now = self._monotonic()
            if first_audio is None:
                first_audio = now - started
            playback_end = max(playback_end, now) + audio.seconds
            # Sent and counted together: what the conversation service is told was spoken is
            # exactly the text of the audio the caller was sent.
            reply.spoken.append(piece)
            events.put_nowait(ReplyAudio(audio, piece))

        try:
            async for item in reply.turn.events():
                if isinstance(item, ReplyDelta):
                    if first_token is None:
                        first_token = self._monotonic() - started
                    if item.restart:
                        splitter.reset()
                        reply.spoken.clear()
                        reply.restarts += 1
                    events.put_nowait(ReplyText(item.text, item.restart))
                    for piece in splitter.feed(item.text):
                        await speak(piece)
                elif isinstance(item, ReplyComplete):
                    for piece in splitter.flush():
                        await speak(piece)
                    # Not cancelled by a barge-in from here on: the report is on its way.
                    await asyncio.shield(reply.turn.heard_all())
                else:
                    total = self._monotonic() - started
                    latency = Latency(0.0, first_token, first_audio, total)
                    events.put_nowait(TurnCompleted(item, latency))
                    reply.turn.cancel()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - the stream ends with the turn's error
            reply.turn.cancel()
            events.put_nowait(error)
