"""Where an utterance starts and ends in a stream, from the voice-activity detector's
speech probability for each frame of audio.

Audio time, not wall-clock time: the same audio gives the same utterances however
fast it arrives. Speech starts after `start_seconds` of frames above the speech
threshold; it ends after `end_silence_seconds` of frames below the silence threshold
(two thresholds, so a probability hovering around one value does not flap); an
utterance longer than `max_utterance_seconds` is refused rather than buffered
without bound.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class EndpointSettings:
    frame_seconds: float = 512 / 16000  # silero's frame at 16 kHz
    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    start_seconds: float = 0.096
    end_silence_seconds: float = 0.4
    max_utterance_seconds: float = 30.0
    # Audio kept from before the detected start, so the first syllable is not cut.
    preroll_seconds: float = 0.3

    def frames(self, seconds: float) -> int:
        return max(1, round(seconds / self.frame_seconds))


class EndpointEvent(enum.Enum):
    SPEECH_STARTED = "speech_started"
    SPEECH_ENDED = "speech_ended"
    TOO_LONG = "too_long"


class Endpointer:
    def __init__(self, settings: EndpointSettings) -> None:
        self.settings = settings
        self._start_frames = settings.frames(settings.start_seconds)
        self._end_frames = settings.frames(settings.end_silence_seconds)
        self._max_frames = settings.frames(settings.max_utterance_seconds)
        self.frame_index = 0  # frames seen so far
        self.speaking = False
        self.utterance_start = 0  # frame where the current utterance's speech began
        self._run = 0  # consecutive frames above (idle) or below (speaking) the threshold

    def push(self, probability: float) -> EndpointEvent | None:
        """The event this frame completes, if any."""
        index = self.frame_index
        self.frame_index += 1
        if not self.speaking:
            self._run = self._run + 1 if probability >= self.settings.speech_threshold else 0
            if self._run >= self._start_frames:
                self.speaking, self._run = True, 0
                self.utterance_start = index + 1 - self._start_frames
                return EndpointEvent.SPEECH_STARTED
            return None
        self._run = self._run + 1 if probability < self.settings.silence_threshold else 0
        if self._run >= self._end_frames:
            self.speaking, self._run = False, 0
            return EndpointEvent.SPEECH_ENDED
        if self.frame_index - self.utterance_start > self._max_frames:
            self.speaking, self._run = False, 0
            return EndpointEvent.TOO_LONG
        return None

    def seconds(self, frames: int) -> float:
        return frames * self.settings.frame_seconds
