"""Log-mel spectrogram in numpy, as openai-whisper's `log_mel_spectrogram` computes it, window by window.

`LogMelStream` computes a long file's spectrogram in bounded memory: a first pass, block by block,
finds the global maximum (which the clamp `max(x, max - 8)` needs), then each window is assembled
from the blocks its frames fall in, kept from that pass where they fit a bounded cache and
computed again from just the samples they read where not. `log_mel_spectrogram` of an array in
memory is the same computation in one block.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .audio import AudioStream
from .constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES

# torch.hann_window(N_FFT) is periodic: the symmetric window of N_FFT + 1 points, minus the last.
_WINDOW = np.hanning(N_FFT + 1)[:-1]
_BLOCK = 1000  # frames per block (~12 MB of float64 temporaries)
_CACHE_BYTES = 8 << 20  # computed blocks kept for the windows (a 2-minute file's, at 80 mels)
# A frame of silence (the padding): every mel is 0, so its log is this constant, computed as
# `_log_spec` computes every other frame's.
_SILENT = float(np.log10(np.maximum(np.zeros(1), 1e-10))[0])


def log_mel_spectrogram(audio: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """openai-whisper's `log_mel_spectrogram(audio)` (no padding): audio [n_samples] float32 at
    16 kHz, filters [n_mels, 1 + N_FFT // 2] -> float32 [n_mels, n_samples // HOP_LENGTH]."""
    mels = LogMelStream(audio, filters, padding=0, block=len(audio) // HOP_LENGTH)
    return mels.window(0, mels.n_frames)


class LogMelStream:
    """openai-whisper's `log_mel_spectrogram(audio, n_mels, padding=padding)`, window by window.

    The audio is zero-padded by `padding` samples at the end; frames are those of torch.stft
    (center=True, reflect padding of N_FFT // 2 at both ends of the padded audio), the last one
    dropped. `window(seek)` equals `whole[:, seek : seek + n_frames]`. Computed in float64 and
    returned as float32. Memory: O(block) and the bounded cache, not O(audio).
    """

    def __init__(self, audio: AudioStream | np.ndarray, filters: np.ndarray, padding: int = N_SAMPLES,
                 block: int = _BLOCK):
        if padding < 0:
            raise ValueError(f"padding must be >= 0 (got {padding})")
        self.stream = audio if isinstance(audio, AudioStream) else AudioStream.from_array(audio)
        self.filters = np.asarray(filters, dtype=np.float64)
        self._filters_t = np.ascontiguousarray(self.filters.T)
        self.padding = int(padding)
        self.block = max(1, int(block))
        self._n_padded = self.stream.n_samples + self.padding
        self._global_max: float | None = None
        # Blocks k (frames [k * block, (k + 1) * block)) computed, most recently used last: the
        # global maximum's pass computes each, and the windows that follow read them again.
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    @property
    def n_mels(self) -> int:
        return self.filters.shape[0]

    @property
    def n_frames(self) -> int:
        """Frames of the whole spectrogram: (n_samples + padding) // HOP_LENGTH."""
        return self._n_padded // HOP_LENGTH

    @property
    def global_max(self) -> float:
        """The largest log10 mel value over the whole audio (computed once, block by block)."""
        if self._global_max is None:
            n_blocks = -(-self.n_frames // self.block)
            self._global_max = max((float(self._block(k).max()) for k in range(n_blocks)), default=float("nan"))
        return self._global_max

    def window(self, seek: int, n_frames: int = N_FRAMES) -> np.ndarray:
        """float32 [n_mels, n]: frames [seek, seek + n_frames) (fewer at the end, as slicing gives)."""
        seek, n_frames = int(seek), int(n_frames)
        if seek < 0 or n_frames < 0:
            raise ValueError(f"seek and n_frames must be >= 0 (got {seek}, {n_frames})")
        stop = min(seek + n_frames, self.n_frames)
        if stop <= seek:
            return np.zeros((self.n_mels, 0), np.float32)
        top = self.global_max - 8.0
        out = np.empty((self.n_mels, stop - seek), np.float32)
        for k in range(seek // self.block, (stop - 1) // self.block + 1):
            start = k * self.block
            f0, f1 = max(seek, start), min(stop, start + self.block)
            spec = self._block(k)[:, f0 - start : f1 - start]
            out[:, f0 - seek : f1 - seek] = (np.maximum(spec, top) + 4.0) / 4.0
        return out

    def _block(self, k: int) -> np.ndarray:
        """Block k's log10 mels, float64 [n_mels, <= block], from the cache or computed (and kept,
        the least recently used dropped past the cache's bound; the newest always stays)."""
        spec = self._blocks.get(k)
        if spec is not None:
            self._blocks.move_to_end(k)
            return spec
        spec = self._log_spec(k * self.block, min((k + 1) * self.block, self.n_frames))
        self._blocks[k] = spec
        while len(self._blocks) > 1 and sum(b.nbytes for b in self._blocks.values()) > _CACHE_BYTES:
            self._blocks.popitem(last=False)
        return spec

    def _log_spec(self, f0: int, f1: int) -> np.ndarray:
        """log10(max(mel, 1e-10)) of frames [f0, f1), float64 [n_mels, f1 - f0], before the clamp."""
        half = N_FFT // 2
        # Frame f reads the reflect-padded signal at [f * HOP - half, f * HOP + half).
        signal = self._reflect_padded(f0 * HOP_LENGTH - half, (f1 - 1) * HOP_LENGTH + half)
        if not signal.any():  # all padding: most of a short file's last window
            return np.full((self.n_mels, f1 - f0), _SILENT)
        frames = np.lib.stride_tricks.sliding_window_view(signal, N_FFT)[::HOP_LENGTH]
        magnitudes = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # [frames, 1 + N_FFT // 2]
        mel = magnitudes @ self._filters_t  # [frames, n_mels]: BLAS-friendly layout
        log_spec = np.log10(np.maximum(mel, 1e-10)).T
        return log_spec

    def _reflect_padded(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) of the padded audio reflect-padded by N_FFT // 2 at both ends (the
        padded audio's coordinates, -N_FFT // 2 <= lo < hi <= n_padded + N_FFT // 2), float64.
        Reads [lo, hi) and, at an edge, the samples its reflection mirrors."""
        half, m = N_FFT // 2, self._n_padded
        left, right = lo < 0, hi > m
        if m <= half:  # too short for one reflection (torch refuses it): numpy reflects again
            left = right = True
        start = 0 if left else lo
        stop = m if right else hi
        if left:
            stop = max(stop, min(m, half + 1))
        if right:
            start = min(start, max(0, m - 1 - half))
        signal = np.pad(self._padded(start, stop), (half if left else 0, half if right else 0), mode="reflect")
        first = -half if left else start
        return signal[lo - first : hi - first]

    def _padded(self, start: int, stop: int) -> np.ndarray:
        """The zero-padded audio's samples [start, stop), 0 <= start <= stop <= n_padded, float64."""
        out = np.zeros(stop - start, np.float64)
        n = min(stop, self.stream.n_samples) - start
        if n > 0:
            out[:n] = self.stream.read(start, n)
        return out
