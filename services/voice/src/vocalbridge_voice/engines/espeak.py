"""eSpeak NG through ctypes (libespeak-ng and its data from the espeakng-loader package): the
fast, robotic voice, for tests and as the fallback. Synchronous mode: espeak_Synth returns
once the callback has had every sample, so one call is one utterance."""

from __future__ import annotations

import ctypes
from typing import Any

from vocalbridge_voice.engines.base import EngineUnavailable, TextToSpeech, Voice

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_RATE = 1  # espeak_PARAMETER espeakRATE
_EE_OK = 0
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


def _languages(address: int | None) -> list[str]:
    """espeak_VOICE.languages: (priority byte, NUL-terminated name)…, ended by a zero byte."""
    found: list[str] = []
    if not address:
        return found
    offset = 0
    while ctypes.string_at(address + offset, 1) != b"\0":
        name = ctypes.string_at(address + offset + 1).decode()
        found.append(name)
        offset += len(name) + 2
    return found


class EspeakTts(TextToSpeech):
    name = "espeak"

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise EngineUnavailable(f"text-to-speech engine 'espeak': package espeakng-loader: {error}") from error
        try:
            lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as error:
            raise EngineUnavailable(f"text-to-speech engine 'espeak': {error}") from error
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_ListVoices.argtypes = (ctypes.POINTER(_EspeakVoice),)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if rate <= 0:
            raise EngineUnavailable(f"text-to-speech engine 'espeak': initialisation failed ({rate})")
        self.sample_rate = rate
        self._lib = lib
        self._chunks: list[bytes] = []
        # Kept on the instance: the C library calls it for as long as it is set.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._voices = self._list(None)
        variant_spec = _EspeakVoice()
        variant_spec.languages = ctypes.cast(ctypes.c_char_p(b"variant"), ctypes.c_void_p)
        self._variants = frozenset(
            identifier.removeprefix("!v/") for identifier, _ in self._list_raw(ctypes.byref(variant_spec))
        )

    def _collect(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    def _list_raw(self, spec: Any) -> list[tuple[str, list[str]]]:
        entries = self._lib.espeak_ListVoices(spec)
        found: list[tuple[str, list[str]]] = []
        index = 0
        while entries[index]:
            voice = entries[index].contents
            found.append(((voice.identifier or b"").decode(), _languages(voice.languages)))
            index += 1
        return found

    def _list(self, spec: Any) -> tuple[Voice, ...]:
        voices: dict[str, Voice] = {}
        for _identifier, languages in self._list_raw(spec):
            if languages:
                voices.setdefault(languages[0], Voice(languages[0], languages[0].lower()))
        return tuple(voices.values())

    def voices(self) -> tuple[Voice, ...]:
        return self._voices

    def variants(self) -> frozenset[str]:
        return self._variants

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> bytes:
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak has no voice {voice!r}")
        self._lib.espeak_SetParameter(_RATE, words_per_minute, 0)
        encoded = text.encode()
        self._chunks = []
        self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        pcm, self._chunks = b"".join(self._chunks), []
        return pcm
