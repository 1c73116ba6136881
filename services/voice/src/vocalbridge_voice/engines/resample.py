"""Sample-rate conversion and stereo downmix for 16-bit PCM, with numpy only (in the
speech workers: the service process does not load numpy).

Downsampling first low-passes with a windowed-sinc filter at the new Nyquist frequency
(otherwise 22.05 kHz speech folds its upper band onto the 16 kHz signal and recognition
suffers), then interpolates linearly; upsampling only interpolates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_TAPS = 63


def _lowpass(signal: npt.NDArray[np.float32], cutoff: float) -> npt.NDArray[np.float32]:
    """`signal` low-passed at `cutoff` (a fraction of its sample rate, below 0.5)."""
    n = np.arange(_TAPS) - (_TAPS - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(_TAPS)
    kernel /= kernel.sum()
    return np.convolve(signal, kernel.astype(np.float32), mode="same").astype(np.float32)


def resample(pcm: bytes, source_rate: int, target_rate: int) -> bytes:
    if source_rate == target_rate or not pcm:
        return pcm
    signal = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if target_rate < source_rate:
        signal = _lowpass(signal, 0.5 * target_rate / source_rate * 0.95)
    count = int(len(signal) * target_rate / source_rate)
    positions = np.arange(count, dtype=np.float64) * (source_rate / target_rate)
    resampled = np.interp(positions, np.arange(len(signal), dtype=np.float64), signal)
    return bytes(np.clip(np.round(resampled), -32768, 32767).astype("<i2").tobytes())


def downmix_stereo(data: bytes) -> bytes:
    """Interleaved 16-bit stereo as mono, the mean of both channels."""
    frames = np.frombuffer(data, dtype="<i2").reshape(-1, 2).astype(np.int32)
    return bytes(((frames[:, 0] + frames[:, 1]) // 2).astype("<i2").tobytes())
