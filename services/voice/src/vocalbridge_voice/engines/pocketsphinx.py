"""PocketSphinx with its bundled US English model: the default speech-to-text engine, fast,
incremental, with partial results while audio streams in."""

from __future__ import annotations

from typing import Any

from vocalbridge_voice.engines.base import STT_SAMPLE_RATE, EngineUnavailable, SpeechToText, SttStream

# A narrower search than the defaults (30,000 active HMMs and 20 word exits per frame, a
# 25-frame window for the final pass): on the bench's sentences, the same transcripts word
# for word, with about 20% less CPU per second of audio and per final pass. Every stream's
# audio goes through this, and the final pass is on the voice-to-voice path.
SEARCH = {"maxhmmpf": 3000, "maxwpf": 10, "fwdflatsfwin": 10}


class _PocketsphinxStream(SttStream):
    def __init__(self, decoder: Any, done: list[Any]) -> None:
        self._decoder = decoder
        self._done = done
        decoder.start_utt()

    def feed(self, pcm16k: bytes) -> str | None:
        self._decoder.process_raw(pcm16k, False, False)
        hypothesis = self._decoder.hyp()
        return hypothesis.hypstr if hypothesis is not None else ""

    def finish(self) -> str:
        self._decoder.end_utt()
        hypothesis = self._decoder.hyp()
        self._done.append(self._decoder)  # free for the next utterance
        return str(hypothesis.hypstr) if hypothesis is not None else ""


class PocketsphinxStt(SpeechToText):
    name = "pocketsphinx"
    streaming_partials = True

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as error:
            raise EngineUnavailable(f"speech-to-text engine 'pocketsphinx': {error}") from error
        self._decoder_class = Decoder
        # Decoders free for an utterance. Streams on one worker may speak at the same time,
        # and a decoder holds one utterance, so each open utterance has its own.
        self._free: list[Any] = [self._new_decoder()]

    def _new_decoder(self) -> Any:
        try:
            # loglevel FATAL: the decoder otherwise logs every utterance to stderr.
            return self._decoder_class(samprate=STT_SAMPLE_RATE, loglevel="FATAL", **SEARCH)
        except (RuntimeError, ValueError) as error:
            raise EngineUnavailable(f"speech-to-text engine 'pocketsphinx': model: {error}") from error

    def transcribe(self, pcm16k: bytes) -> str:
        stream = self.open_stream()
        stream.feed(pcm16k)
        return stream.finish()

    def open_stream(self) -> SttStream:
        decoder = self._free.pop() if self._free else self._new_decoder()
        return _PocketsphinxStream(decoder, self._free)

    def tidy(self) -> None:
        """Keeps one free decoder. Each holds its own copy of the model (about 90 MB): one per
        utterance heard at the same time, kept while streams overlap, dropped once idle."""
        del self._free[1:]
