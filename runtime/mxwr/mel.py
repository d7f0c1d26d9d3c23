"""Log-mel spectrogram in numpy, as openai-whisper's `log_mel_spectrogram` computes it."""

from __future__ import annotations

import numpy as np

from .constants import HOP_LENGTH, N_FFT

# torch.hann_window(N_FFT) is periodic: the symmetric window of N_FFT + 1 points, minus the last.
_WINDOW = np.hanning(N_FFT + 1)[:-1]


def log_mel_spectrogram(audio: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """audio [n_samples] float32 at 16 kHz, filters [n_mels, 1 + N_FFT // 2] -> [n_mels, frames].

    Like torch.stft(center=True): reflect-pad by N_FFT // 2, frame every HOP_LENGTH samples, and
    drop the last frame. Computed in float64 and returned as float32.
    """
    padded = np.pad(audio.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    magnitudes = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # [frames, 201]
    mel = filters.astype(np.float64) @ magnitudes.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
