"""Audio as the gateway accepts and returns it: WAV files of 16-bit PCM.

Pure: bytes in, values out. Every way an upload can be wrong is refused here with
INVALID_ARGUMENT and a reason before any engine runs, so bad audio costs nothing,
stores nothing and bills nothing.
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

from vocalbridge_common.errors import FieldViolation, InvalidArgument

# The rates a caller's recording or stream may have; engines get what they need by resampling.
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM


class InvalidAudio(InvalidArgument):
    """Audio the gateway cannot use; `reason` says why (INVALID_AUDIO, AUDIO_TOO_LONG, …)."""

    default_reason = "INVALID_AUDIO"

    def __init__(self, message: str, *, reason: str | None = None, field: str = "audio.content") -> None:
        super().__init__(message, reason=reason, field_violations=[FieldViolation(field, message)])


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class Pcm:
    """16-bit little-endian samples at `sample_rate`: mono, or interleaved stereo as uploaded
    (the speech workers mix it down; engines speak mono)."""

    samples: bytes
    sample_rate: int
    channels: int = 1

    @property
    def frames(self) -> int:
        return len(self.samples) // (SAMPLE_WIDTH * self.channels)

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def parse_wav(content: bytes, limits: AudioLimits, field: str = "audio.content") -> Pcm:
    """The samples of a WAV upload (mono or stereo), or InvalidAudio."""
    if not content:
        raise InvalidAudio("is required: a WAV file (16-bit PCM)", reason="AUDIO_EMPTY", field=field)
    if len(content) > limits.max_bytes:
        raise InvalidAudio(
            f"must be at most {limits.max_bytes} bytes (got {len(content)})", reason="AUDIO_TOO_LARGE", field=field
        )
    if content[:4] != b"RIFF" or content[8:12] != b"WAVE":
        raise InvalidAudio("is not a WAV file (no RIFF/WAVE header)", reason="AUDIO_NOT_WAV", field=field)
    try:
        with wave.open(io.BytesIO(content)) as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.getnframes()
            data = reader.readframes(frames)
    except (wave.Error, EOFError, struct.error) as error:
        # wave.Error also covers compressed formats (only PCM is read).
        raise InvalidAudio(f"is not a readable PCM WAV file: {error}", reason="AUDIO_NOT_WAV", field=field) from None
    if width != SAMPLE_WIDTH:
        raise InvalidAudio(
            f"must be 16-bit PCM (got {width * 8}-bit samples)", reason="AUDIO_SAMPLE_WIDTH_UNSUPPORTED", field=field
        )
    if channels not in (1, 2):
        raise InvalidAudio(
            f"must be mono or stereo (got {channels} channels)", reason="AUDIO_CHANNELS_UNSUPPORTED", field=field
        )
    if rate not in SAMPLE_RATES:
        allowed = ", ".join(str(r) for r in SAMPLE_RATES)
        raise InvalidAudio(
            f"sample rate must be one of {allowed} Hz (got {rate})", reason="AUDIO_SAMPLE_RATE_UNSUPPORTED", field=field
        )
    usable = len(data) - len(data) % (SAMPLE_WIDTH * channels)
    if usable == 0:
        raise InvalidAudio("holds no samples", reason="AUDIO_EMPTY", field=field)
    pcm = Pcm(data[:usable], rate, channels)
    if pcm.seconds > limits.max_seconds:
        raise InvalidAudio(
            f"must be at most {limits.max_seconds:g} seconds long (got {pcm.seconds:.1f})",
            reason="AUDIO_TOO_LONG",
            field=field,
        )
    return pcm


def validate_stream_rate(rate: int) -> None:
    if rate not in SAMPLE_RATES:
        allowed = ", ".join(str(r) for r in SAMPLE_RATES)
        raise InvalidArgument(
            f"config.sample_rate_hertz must be one of {allowed}",
            reason="AUDIO_SAMPLE_RATE_UNSUPPORTED",
            field_violations=[FieldViolation("config.sample_rate_hertz", f"must be one of {allowed}")],
        )


def to_wav(pcm: Pcm) -> bytes:
    """A WAV file (16-bit) of `pcm`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(pcm.channels)
        writer.setsampwidth(SAMPLE_WIDTH)
        writer.setframerate(pcm.sample_rate)
        writer.writeframes(pcm.samples)
    return buffer.getvalue()
