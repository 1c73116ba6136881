"""Silero VAD: its ONNX model, from the silero-vad package's files, run with onnxruntime.
The package's Python module is never imported (it imports torch, which is not installed):
the file is found through the package's location alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vocalbridge_voice.engines.base import EngineUnavailable, VoiceActivityDetector

FRAME_SAMPLES = 512  # 32 ms at 16 kHz, the model's frame
_CONTEXT_SAMPLES = 64  # the model sees the end of the previous frame too


def model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("voice activity detector 'silero': package silero-vad is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise EngineUnavailable(f"voice activity detector 'silero': model file {path} is missing")
    return path


class SileroModel:
    """The loaded model, shared by the detectors of one worker."""

    def __init__(self) -> None:
        try:
            import numpy
            import onnxruntime
        except ImportError as error:
            raise EngineUnavailable(f"voice activity detector 'silero': {error}") from error
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session: Any = onnxruntime.InferenceSession(
            str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.numpy: Any = numpy

    def detector(self) -> SileroDetector:
        return SileroDetector(self)


class SileroDetector(VoiceActivityDetector):
    frame_samples = FRAME_SAMPLES

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        np = model.numpy
        self._rate = np.array(16000, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        np = self._model.numpy
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT_SAMPLES), dtype=np.float32)

    def probability(self, frame: bytes) -> float:
        np = self._model.numpy
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32).reshape(1, -1) / 32768.0
        window = np.concatenate([self._context, samples], axis=1)
        output, self._state = self._model.session.run(None, {"input": window, "state": self._state, "sr": self._rate})
        self._context = window[:, -_CONTEXT_SAMPLES:]
        return float(output[0][0])
