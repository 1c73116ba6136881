"""The one interface every speech engine implements, so a hosted engine is one more class.

Engines run inside the worker processes (engines/worker.py), never on the service's event
loop: they are CPU-bound and most of them hold native state that is not thread-safe. Each
is built once per worker at start-up, from its name; a missing package or model fails the
start with the engine's name.

Audio handed to and returned by engines is mono 16-bit little-endian PCM bytes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

# Speech-to-text engines work at 16 kHz (both bundled models are trained at that rate).
STT_SAMPLE_RATE = 16000


class EngineUnavailable(RuntimeError):
    """An engine or one of its models cannot be loaded; the message names it."""


class SttStream(abc.ABC):
    """One utterance being recognized incrementally."""

    @abc.abstractmethod
    def feed(self, pcm16k: bytes) -> str | None:
        """Adds audio; the partial transcript so far, or None when the engine gives none."""

    @abc.abstractmethod
    def finish(self) -> str:
        """The final transcript of everything fed."""


class SpeechToText(abc.ABC):
    name: str
    # Whether the engine gives partial transcripts while audio streams in.
    streaming_partials: bool = False

    @abc.abstractmethod
    def transcribe(self, pcm16k: bytes) -> str:
        """The transcript of a whole clip at STT_SAMPLE_RATE."""

    def open_stream(self) -> SttStream:
        """An utterance fed chunk by chunk. Engines without partials transcribe it at the end."""
        return _BufferedStream(self)

    def tidy(self) -> None:  # noqa: B027 - an optional hook: most engines keep nothing extra
        """The worker is idle: give back what only concurrent work needed (nothing by default)."""


class _BufferedStream(SttStream):
    def __init__(self, engine: SpeechToText) -> None:
        self._engine = engine
        self._chunks: list[bytes] = []

    def feed(self, pcm16k: bytes) -> str | None:
        self._chunks.append(pcm16k)
        return None

    def finish(self) -> str:
        return self._engine.transcribe(b"".join(self._chunks))


@dataclass(frozen=True)
class Voice:
    """A voice an engine can speak with: its name and language (BCP 47, lower case)."""

    name: str
    language: str


class TextToSpeech(abc.ABC):
    name: str
    sample_rate: int

    @abc.abstractmethod
    def voices(self) -> tuple[Voice, ...]:
        """Every installed voice."""

    def variants(self) -> frozenset[str]:
        """Variants a voice name may carry after `+` (none unless the engine has them)."""
        return frozenset()

    @abc.abstractmethod
    def synthesize(self, text: str, voice: str, words_per_minute: int) -> bytes:
        """`text` spoken by `voice` at about `words_per_minute`, at `sample_rate`."""

    def tidy(self) -> None:  # noqa: B027 - an optional hook: most engines keep nothing extra
        """The worker is idle: give back memory kept for speed while busy (nothing by default)."""


class VoiceActivityDetector(abc.ABC):
    """Speech probability per frame of `frame_samples` samples at 16 kHz, with state carried
    between calls (one detector object per stream)."""

    frame_samples: int

    @abc.abstractmethod
    def probability(self, frame: bytes) -> float: ...

    @abc.abstractmethod
    def reset(self) -> None: ...


def words_per_minute_scale(words_per_minute: int, natural: int = 175) -> float:
    """How much longer than natural each sound lasts at this rate (Piper's length scale)."""
    return natural / words_per_minute
