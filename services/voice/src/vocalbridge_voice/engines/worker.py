"""One worker process: loads the configured engines of its role once, then runs jobs one at a
time (speech-to-text workers: the recognizer and the voice activity detector; text-to-speech
workers: the voices).

It talks to the service over a pipe (engines/pool.py): a request is `(operation, args)`,
an answer `("ok", result)` or `("error", kind, message)`. State that must stay in one
process (an utterance being decoded, a stream's voice-activity detector) lives here, in
the `Worker` object, keyed by the stream's id.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from vocalbridge_voice.domain.endpointing import Endpointer, EndpointEvent, EndpointSettings
from vocalbridge_voice.engines.base import (
    STT_SAMPLE_RATE,
    EngineUnavailable,
    SpeechToText,
    SttStream,
    TextToSpeech,
)
from vocalbridge_voice.engines.resample import downmix_stereo, resample
from vocalbridge_voice.engines.silero import FRAME_SAMPLES, SileroDetector, SileroModel
from vocalbridge_voice.engines.spec import ROLES, STT, STT_ENGINES, TTS, TTS_ENGINES, EngineSpec

__all__ = ["ROLES", "STT", "STT_ENGINES", "TTS", "TTS_ENGINES", "EngineSpec", "Worker", "worker_main"]

# Partial transcripts at most this often (seconds of audio), so a stream's chunks stay cheap.
PARTIAL_EVERY_SECONDS = 0.25
_FRAME_BYTES = FRAME_SAMPLES * 2


def build_stt(name: str) -> SpeechToText:
    if name == "pocketsphinx":
        from vocalbridge_voice.engines.pocketsphinx import PocketsphinxStt

        return PocketsphinxStt()
    if name == "whisper":
        from vocalbridge_voice.engines.whisper import WhisperStt

        return WhisperStt()
    raise EngineUnavailable(f"unknown speech-to-text engine {name!r} (known: {', '.join(STT_ENGINES)})")


def build_tts(name: str, spec: EngineSpec) -> TextToSpeech:
    if name == "piper":
        from vocalbridge_voice.engines.piper import PiperTts

        return PiperTts(spec.piper_voices)
    if name == "espeak":
        from vocalbridge_voice.engines.espeak import EspeakTts

        return EspeakTts()
    raise EngineUnavailable(f"unknown text-to-speech engine {name!r} (known: {', '.join(TTS_ENGINES)})")


class _Stream:
    """One StreamingConverse stream's audio state: detector, end of utterance, recognizer."""

    def __init__(self, stt: SpeechToText, detector: SileroDetector, rate: int, settings: EndpointSettings) -> None:
        self.stt = stt
        self.detector = detector
        self.rate = rate
        self.endpointer = Endpointer(settings)
        self.pending = b""  # 16 kHz audio not yet a whole frame
        self.preroll: list[bytes] = []  # the last frames before speech started
        self.preroll_frames = settings.frames(settings.preroll_seconds)
        self.utterance: SttStream | None = None
        self.since_partial = 0
        self.last_partial = ""

    def feed(self, pcm: bytes) -> list[tuple[Any, ...]]:
        self.pending += resample(pcm, self.rate, STT_SAMPLE_RATE)
        events: list[tuple[Any, ...]] = []
        partial_frames = self.endpointer.settings.frames(PARTIAL_EVERY_SECONDS)
        while len(self.pending) >= _FRAME_BYTES:
            frame, self.pending = self.pending[:_FRAME_BYTES], self.pending[_FRAME_BYTES:]
            event = self.endpointer.push(self.detector.probability(frame))
            if self.utterance is None:
                self.preroll = [*self.preroll[-(self.preroll_frames - 1) :], frame] if self.preroll_frames > 1 else []
            if event is EndpointEvent.SPEECH_STARTED:
                self.utterance = self.stt.open_stream()
                self.utterance.feed(b"".join(self.preroll))
                self.preroll, self.since_partial, self.last_partial = [], 0, ""
                events.append(("speech_started", self.endpointer.seconds(self.endpointer.utterance_start)))
                continue
            if self.utterance is None:
                continue
            if event is EndpointEvent.TOO_LONG:
                self.utterance.finish()
                self.utterance = None
                events.append(("too_long", self.endpointer.settings.max_utterance_seconds))
                continue
            partial = self.utterance.feed(frame)
            self.since_partial += 1
            if event is EndpointEvent.SPEECH_ENDED:
                start = self.endpointer.utterance_start
                seconds = self.endpointer.seconds(self.endpointer.frame_index - start)
                events.append(("ended", self.utterance.finish(), seconds))
                self.utterance = None
            elif partial is not None and self.since_partial >= partial_frames and partial != self.last_partial:
                self.since_partial, self.last_partial = 0, partial
                events.append(("partial", partial))
        return events

    def close(self) -> None:
        if self.utterance is not None:
            self.utterance.finish()  # frees the recognizer
            self.utterance = None


class Worker:
    def __init__(self, spec: EngineSpec, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"a speech worker's role is one of {', '.join(ROLES)}, not {role!r}")
        self.spec = spec
        self.role = role
        self.stt = {name: build_stt(name) for name in spec.stt} if role == STT else {}
        self.tts = {name: build_tts(name, spec) for name in spec.tts} if role == TTS else {}
        self._vad = SileroModel() if role == STT else None
        self.streams: dict[str, _Stream] = {}
        self.operations: dict[str, Callable[..., Any]] = {
            "describe": self.describe,
            "transcribe": self.transcribe,
            "synthesize": self.synthesize,
            "stream_open": self.stream_open,
            "stream_feed": self.stream_feed,
            "stream_close": self.stream_close,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "tts": {
                name: {
                    "sample_rate": engine.sample_rate,
                    "voices": [(voice.name, voice.language) for voice in engine.voices()],
                    "variants": sorted(engine.variants()),
                }
                for name, engine in self.tts.items()
            },
            "stt": {name: {"partials": engine.streaming_partials} for name, engine in self.stt.items()},
        }

    @property
    def vad(self) -> SileroModel:
        if self._vad is None:
            raise RuntimeError(f"a {self.role} worker has no voice activity detector")
        return self._vad

    def transcribe(self, engine: str, pcm: bytes, rate: int, channels: int = 1) -> tuple[str, bool]:
        """(transcript, whether the detector heard any speech). Silence is not decoded."""
        audio = resample(downmix_stereo(pcm) if channels == 2 else pcm, rate, STT_SAMPLE_RATE)
        detector = self.vad.detector()
        settings = self.spec.endpointing
        endpointer = Endpointer(settings)
        heard = False
        for start in range(0, len(audio) - _FRAME_BYTES + 1, _FRAME_BYTES):
            if endpointer.push(detector.probability(audio[start : start + _FRAME_BYTES])) is not None:
                heard = True
                break
        if not heard:
            return "", False
        return self.stt[engine].transcribe(audio), True

    def synthesize(self, engine: str, voice: str, text: str, words_per_minute: int) -> tuple[bytes, int]:
        tts = self.tts[engine]
        return tts.synthesize(text, voice, words_per_minute), tts.sample_rate

    def stream_open(self, stream_id: str, engine: str, rate: int) -> None:
        self.streams[stream_id] = _Stream(self.stt[engine], self.vad.detector(), rate, self.spec.endpointing)

    def stream_feed(self, stream_id: str, pcm: bytes) -> list[tuple[Any, ...]]:
        return self.streams[stream_id].feed(pcm)

    def warm_up(self) -> None:
        """One small job per engine before the worker says it is ready: an engine's first run
        is slower (onnxruntime sizes its buffers, the decoders fill their caches), and the
        first caller should not pay for it. Then tidied, so idle memory stays as low."""
        for recognizer in self.stt.values():
            recognizer.transcribe(b"\0\0" * (STT_SAMPLE_RATE // 10))
        if self._vad is not None:
            self._vad.detector().probability(b"\0" * _FRAME_BYTES)
        for engine in self.tts.values():
            voices = engine.voices()
            if voices:
                engine.synthesize("Hello.", voices[0].name, 175)
        self.tidy()

    def tidy(self) -> None:
        """Idle: the engines give back what they kept for concurrent work, then the C heap
        returns freed pages to the system (glibc keeps them otherwise)."""
        for recognizer in self.stt.values():
            recognizer.tidy()
        for voice in self.tts.values():
            voice.tidy()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)

    def stream_close(self, stream_id: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.close()


def worker_main(connection: Connection) -> None:
    """The body of a worker process: the spec and role first, then jobs until the pipe closes."""
    try:
        spec, role = connection.recv()
        worker = Worker(spec, role)
        worker.warm_up()
        connection.send(("ready", worker.describe()))
    except EngineUnavailable as error:
        connection.send(("failed", str(error)))
        return
    except Exception as error:  # noqa: BLE001 - reported to the service, which refuses to start
        connection.send(("failed", f"{type(error).__name__}: {error}"))
        return
    serve(connection, worker, spec.idle_tidy_seconds)


def serve(connection: Connection, worker: Worker, idle_tidy_seconds: float) -> None:
    """Runs jobs until the pipe closes; once no job has come for `idle_tidy_seconds` after
    one that did, tidies the worker (gives back memory only concurrent work needed)."""
    tidy = False
    while True:
        try:
            if tidy and not connection.poll(idle_tidy_seconds):
                worker.tidy()
                tidy = False
                continue
            operation, args = connection.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        tidy = True
        try:
            result = worker.operations[operation](*args)
        except Exception as error:  # noqa: BLE001 - every failure goes back to the caller
            connection.send(("error", type(error).__name__, f"{error}\n{traceback.format_exc(limit=5)}"))
        else:
            connection.send(("ok", result))


def main() -> None:
    """`python -m vocalbridge_voice.engines.worker <fd>`: started by the pool, with one end of a
    socket pair as `fd`. Its own interpreter, so nothing of the service process is inherited
    or re-imported (the service's threads and its __main__ alike)."""
    connection = Connection(int(sys.argv[1]))
    try:
        worker_main(connection)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
