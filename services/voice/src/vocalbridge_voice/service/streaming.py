"""StreamingConverse: a spoken conversation over one stream, turn after turn.

The caller's audio goes, chunk by chunk, to the stream's worker (voice activity, end of
utterance, partial transcripts). Each finished utterance becomes a turn streamed from the
conversation service; its text is passed on as it comes and spoken a sentence at a time.

Pacing and barge-in. The server keeps a model of the caller's playback: audio plays from
when it is sent, one piece after the other. The next piece of the reply is taken from the
model only when what was sent is within `reply_lead` seconds of running out, so the reply
is produced about as fast as it is heard (the conversation stream is read through a
small flow-control window, see conversation_client). When the caller starts speaking while
the reply is still being produced, the reply stops: its stream is cancelled, and the
conversation service stores it truncated at the text taken so far and bills that much.
After `pacing_limit` seconds the rest of a reply is taken at once (the model's attempt has
a time limit), so a later barge-in finds the reply whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from vocalbridge_common.ids import new_id
from vocalbridge_voice.conversation_client import ConversationTurns, ReplyDelta, StoredTurn
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
    """The reply being spoken."""

    task: asyncio.Task[None]
    spoken: list[str]


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
            nonlocal reply
            if reply is not None and not reply.task.done():
                reply.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reply.task
                events.put_nowait(ReplyInterrupted("".join(reply.spoken)))
            reply = None

        try:
            async for chunk in audio:
                if not chunk:
                    continue
                for event in await self._speech.feed_stream(handle, chunk):
                    kind = event[0]
                    if kind == "speech_started":
                        await interrupt()  # barge-in, if a reply is being produced
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
                            spoken: list[str] = []
                            turn_number += 1
                            key = f"{stream_key}-{turn_number}"
                            task = asyncio.create_task(
                                self._reply(session, voice, transcript, seconds, key, spoken, events)
                            )
                            reply = _Reply(task, spoken)
            if reply is not None:
                await reply.task  # the caller stopped sending: finish the reply in progress
            events.put_nowait(None)
        except asyncio.CancelledError:
            if reply is not None:
                reply.task.cancel()
            raise
        except BaseException as error:  # noqa: BLE001 - handed to the stream, which raises it
            if reply is not None:
                reply.task.cancel()
            events.put_nowait(error)

    async def _reply(
        self,
        session: str,
        voice: VoiceChoice,
        transcript: str,
        audio_seconds: float,
        key: str,
        spoken: list[str],
        events: asyncio.Queue[StreamEvent | BaseException | None],
    ) -> None:
        started = self._monotonic()
        first_token: float | None = None
        first_audio: float | None = None
        playback_end = started  # when the caller will have heard everything sent
        splitter = SentenceSplitter()

        async def speak(piece: str) -> None:
            nonlocal playback_end, first_audio
            if not speakable(piece):
                spoken.append(piece)
                return
            now = self._monotonic()
            if now - started < self._pacing_limit and playback_end - now > self._lead:
                await asyncio.sleep(playback_end - now - self._lead)
            audio = await self._speech.synthesize(voice, piece)
            now = self._monotonic()
            if first_audio is None:
                first_audio = now - started
            playback_end = max(playback_end, now) + audio.seconds
            spoken.append(piece)
            events.put_nowait(ReplyAudio(audio, piece))

        try:
            async for item in self._turns.stream(
                session, transcript, audio_seconds, self._speech.speech_provider, key, TURN_TIMEOUT_SECONDS
            ):
                if isinstance(item, ReplyDelta):
                    if first_token is None:
                        first_token = self._monotonic() - started
                    if item.restart:
                        splitter.reset()
                    events.put_nowait(ReplyText(item.text, item.restart))
                    for piece in splitter.feed(item.text):
                        await speak(piece)
                else:
                    for piece in splitter.flush():
                        await speak(piece)
                    total = self._monotonic() - started
                    latency = Latency(0.0, first_token, first_audio, total)
                    events.put_nowait(TurnCompleted(item, latency))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - the stream ends with the turn's error
            events.put_nowait(error)
