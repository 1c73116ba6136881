"""The speech engines as the use cases see them: typed calls to the worker pool, the
installed voices as a catalogue, and a limit on the work in progress."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from vocalbridge_common import metrics
from vocalbridge_common.errors import ResourceExhausted
from vocalbridge_common.pricing import DEFAULT_SPEECH_PROVIDER
from vocalbridge_voice.domain.audio import Pcm
from vocalbridge_voice.domain.voices import VoiceCatalogue, VoiceChoice, VoiceInfo
from vocalbridge_voice.engines.pool import EnginePool, StreamHandle
from vocalbridge_voice.engines.spec import STT, TTS

# Seconds of engine work (waiting for a worker included) per second of audio heard or spoken:
# below 1 keeps up with a speaker.
REAL_TIME_FACTOR = metrics.histogram(
    "voice_real_time_factor",
    "Processing time per second of audio, by kind (stt, tts) and engine.",
    # Not `job`: Prometheus sets that label itself on every scraped series.
    ("kind", "engine"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
)


def _observe_rtf(kind: str, engine: str, started: float, audio_seconds: float) -> None:
    if audio_seconds > 0:
        REAL_TIME_FACTOR.labels(kind, engine).observe((time.perf_counter() - started) / audio_seconds)


@dataclass(frozen=True)
class Transcript:
    text: str
    heard_speech: bool


class Capacity:
    """At most `limit` of one kind of work at once; the next is refused, not queued."""

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        self.in_use = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.in_use >= self.limit:
            raise ResourceExhausted(
                f"the voice service is busy: {self.limit} {self.kind} already in progress; retry shortly",
                reason="VOICE_CAPACITY_EXHAUSTED",
                metadata={"kind": self.kind, "limit": str(self.limit)},
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


class Speech:
    # Every offline engine bills as the one local speech provider (its rows in billing's prices).
    speech_provider = DEFAULT_SPEECH_PROVIDER

    def __init__(self, pool: EnginePool, stt_engine: str, default_voice: str) -> None:
        self._pool = pool
        self.stt_engine = stt_engine
        description = pool.description
        tts = description["tts"]
        # The default voice's engine first: a bare voice name is looked up there first.
        default_engine = default_voice.partition("/")[0]
        engines = tuple(sorted(tts, key=lambda name: name != default_engine))
        self.catalogue = VoiceCatalogue(
            engines=engines,
            voices=tuple(
                VoiceInfo(engine, name, language) for engine in engines for name, language in tts[engine]["voices"]
            ),
            default_voice=default_voice,
            variants={engine: frozenset(tts[engine]["variants"]) for engine in engines},
        )
        self.partials = bool(description["stt"][stt_engine]["partials"])

    def check_default_voice(self) -> str | None:
        """Why the configured default voice cannot be spoken, if it cannot."""
        found = self.catalogue.lookup(self.catalogue.default_voice)
        return found if isinstance(found, str) else None

    async def transcribe(self, pcm: Pcm) -> Transcript:
        started = time.perf_counter()
        text, heard = await self._pool.run(
            STT, "transcribe", self.stt_engine, pcm.samples, pcm.sample_rate, pcm.channels
        )
        _observe_rtf("stt", self.stt_engine, started, pcm.seconds)
        return Transcript(str(text).strip(), bool(heard))

    async def synthesize(self, choice: VoiceChoice, text: str, *, urgent: bool = False) -> Pcm:
        """`text` spoken; `urgent` for the first piece of a streamed reply, which a caller is
        waiting to hear (it goes before queued pieces that have playback time in hand)."""
        started = time.perf_counter()
        samples, rate = await self._pool.run(
            TTS, "synthesize", choice.engine, choice.voice, text, choice.words_per_minute, urgent=urgent
        )
        spoken = Pcm(bytes(samples), int(rate))
        _observe_rtf("tts", choice.engine, started, spoken.seconds)
        return spoken

    async def open_stream(self, sample_rate: int) -> StreamHandle:
        return await self._pool.open_stream(self.stt_engine, sample_rate)

    async def feed_stream(self, handle: StreamHandle, pcm: bytes) -> list[tuple[Any, ...]]:
        return await self._pool.feed_stream(handle, pcm)

    async def close_stream(self, handle: StreamHandle) -> None:
        await self._pool.close_stream(handle)
