"""Streaming audio and log-mel for long-form input: memory stays bounded however long the file.

`open_audio(path)` gives the samples `mxwr.audio.load_audio(path)` gives (mono float32, 16 kHz),
read range by range:

- a 16 kHz WAV (any encoding and channel count `load_audio` decodes natively) is decoded straight
  from the file, range by range;
- a WAV at another rate is decoded and resampled block by block (each block reads the input
  samples its filter taps need, so the result is `resample`'s, bit for bit) into an anonymous
  temporary float32 file that is memory-mapped;
- anything else is decoded by ffmpeg (openai-whisper's command line), its stdout streamed in
  chunks into such a temporary file.

The temporary file is unlinked from the start (it disappears when the stream is closed, or when
the process ends), so nothing is left behind.

`LogMelStream` gives openai-whisper's `log_mel_spectrogram(audio, padding=N_SAMPLES)` window by
window: a first chunked pass finds the global maximum (which the clamp `max(x, max - 8)` needs),
then each window is computed from just the samples its frames read.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .audio import (_ffmpeg_cmd, _ffmpeg_error, _inspect, _polyphase, _read_mono, _resample_block,
                    _resample_span, _WavLayout)
from .constants import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from .mel import _WINDOW, log_mel_spectrogram

_RESAMPLE_BLOCK = 1 << 13  # output samples per resampling block (~3 MB of temporaries)
_PIPE_CHUNK = 1 << 20  # bytes of ffmpeg output read at a time
_MEL_BLOCK = 1000  # frames per log-mel block (~12 MB of float64 temporaries)


class AudioStream:
    """Mono float32 samples at 16 kHz, read range by range. Close it (or use `with`) when done."""

    sample_rate = SAMPLE_RATE

    def __init__(self, n_samples: int, reader: Callable[[int, int], np.ndarray],
                 closer: Callable[[], None] | None = None, path: Path | None = None):
        self.n_samples = int(n_samples)
        self.path = path
        self._reader: Callable[[int, int], np.ndarray] | None = reader
        self._closer = closer

    @classmethod
    def from_array(cls, audio: np.ndarray) -> AudioStream:
        """A stream over samples already in memory (16 kHz mono)."""
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        return cls(len(audio), lambda start, stop: audio[start:stop].copy())

    @property
    def duration(self) -> float:
        return self.n_samples / SAMPLE_RATE

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) as a new float32 array; shorter (or empty) past the end."""
        if self._reader is None:
            raise ValueError("read from a closed AudioStream")
        start, count = int(start), int(count)
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be >= 0 (got {start}, {count})")
        stop = min(start + count, self.n_samples)
        if stop <= start:
            return np.zeros(0, np.float32)
        return self._reader(start, stop)

    def close(self) -> None:
        self._reader = None
        closer, self._closer = self._closer, None
        if closer is not None:
            closer()

    @property
    def closed(self) -> bool:
        return self._reader is None

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"AudioStream({str(self.path) if self.path else '<array>'}, n_samples={self.n_samples})"


def open_audio(path: str | Path, tmpdir: str | Path | None = None) -> AudioStream:
    """Opens audio as `load_audio` reads it (same samples, same errors), with bounded memory.

    `tmpdir`: where the temporary 16 kHz float32 file goes when one is needed (default: the
    system's temporary folder); it takes 4 bytes a sample (~0.7 GB for 3 hours).
    """
    path = Path(path)
    layout = _inspect(path)  # AudioError for a missing file, a directory, no decoder
    if layout is None:
        return _from_ffmpeg(path, tmpdir)
    if layout.rate == SAMPLE_RATE:
        return _from_wav(path, layout)
    return _from_resampled_wav(path, layout, tmpdir)


def _from_wav(path: Path, layout: _WavLayout) -> AudioStream:
    f = open(path, "rb")
    return AudioStream(layout.frames, lambda start, stop: _read_mono(f, layout, start, stop), f.close, path)


def _from_temp(path: Path, tmp: BinaryIO, n: int) -> AudioStream:
    """A stream over n float32 samples written to the temporary file `tmp` (closed with it)."""
    if n == 0:
        tmp.close()
        return AudioStream(0, lambda start, stop: np.zeros(0, np.float32), None, path)
    tmp.flush()
    mapped = [np.memmap(tmp, dtype=np.float32, mode="r", shape=(n,))]

    def read(start: int, stop: int) -> np.ndarray:
        return np.array(mapped[0][start:stop])

    def close() -> None:
        mapped.clear()  # the only reference: unmaps it
        tmp.close()

    return AudioStream(n, read, close, path)


def _from_resampled_wav(path: Path, layout: _WavLayout, tmpdir: str | Path | None) -> AudioStream:
    up, down, h = _polyphase(layout.rate, SAMPLE_RATE)
    n_in = layout.frames
    n_out = (n_in * up + down - 1) // down
    tmp = tempfile.TemporaryFile(dir=tmpdir)
    try:
        with open(path, "rb") as f:
            for start in range(0, n_out, _RESAMPLE_BLOCK):
                stop = min(start + _RESAMPLE_BLOCK, n_out)
                lo, hi = _resample_span(start, stop, up, down)
                seg = np.zeros(hi - lo, np.float32)  # zeros where the taps fall outside the input
                a, b = max(lo, 0), min(hi, n_in)
                if b > a:
                    seg[a - lo : b - lo] = _read_mono(f, layout, a, b)
                tmp.write(_resample_block(seg, lo, start, stop, up, down, h).tobytes())
    except BaseException:
        tmp.close()
        raise
    return _from_temp(path, tmp, n_out)


def _from_ffmpeg(path: Path, tmpdir: str | Path | None) -> AudioStream:
    tmp = tempfile.TemporaryFile(dir=tmpdir)
    err = tempfile.TemporaryFile(dir=tmpdir)  # a file, not a pipe: ffmpeg's log never blocks it
    n, carry = 0, b""
    try:
        proc = subprocess.Popen(_ffmpeg_cmd(path, SAMPLE_RATE), stdout=subprocess.PIPE, stderr=err)
        try:
            while chunk := proc.stdout.read(_PIPE_CHUNK):
                chunk = carry + chunk
                whole = len(chunk) // 2 * 2
                carry = chunk[whole:]
                samples = np.frombuffer(chunk, np.int16, count=whole // 2).astype(np.float32) / 32768.0
                tmp.write(samples.tobytes())
                n += len(samples)
            returncode = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if returncode != 0:
            err.seek(0)
            raise _ffmpeg_error(path, returncode, err.read())
    except BaseException:
        tmp.close()
        raise
    finally:
        err.close()
    return _from_temp(path, tmp, n)


class LogMelStream:
    """openai-whisper's `log_mel_spectrogram(audio, n_mels, padding=padding)`, window by window.

    The audio is zero-padded by `padding` samples at the end; frames are those of torch.stft
    (center=True, reflect padding of N_FFT // 2 at both ends of the padded audio), the last one
    dropped. `window(seek)` equals `whole[:, seek : seek + n_frames]`. Memory: O(block), not O(audio).
    """

    def __init__(self, stream: AudioStream | np.ndarray, filters: np.ndarray, padding: int = N_SAMPLES,
                 block: int = _MEL_BLOCK):
        if not isinstance(stream, AudioStream):
            stream = AudioStream.from_array(stream)
        if padding < 0:
            raise ValueError(f"padding must be >= 0 (got {padding})")
        self.stream = stream
        self.filters = np.asarray(filters, dtype=np.float64)
        self._filters_t = np.ascontiguousarray(self.filters.T)
        self.padding = int(padding)
        self.block = max(1, int(block))
        self._n_padded = stream.n_samples + self.padding
        self._global_max: float | None = None
        self._small: np.ndarray | None = None
        if self._n_padded < HOP_LENGTH:
            self._small = np.zeros((self.n_mels, 0), np.float32)  # no frames at all
        elif self._n_padded <= N_FFT // 2:
            # Too short for one reflection (torch refuses it); numpy's whole-array result, tiny anyway.
            self._small = log_mel_spectrogram(self._padded(0, self._n_padded), self.filters)

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
            if self._small is not None or self.n_frames == 0:
                self._global_max = float("nan")
            else:
                self._global_max = max(float(self._log_spec(f0, min(f0 + self.block, self.n_frames)).max())
                                       for f0 in range(0, self.n_frames, self.block))
        return self._global_max

    def window(self, seek: int, n_frames: int = N_FRAMES) -> np.ndarray:
        """float32 [n_mels, n]: frames [seek, seek + n_frames) (fewer at the end, as slicing gives)."""
        seek, n_frames = int(seek), int(n_frames)
        if seek < 0 or n_frames < 0:
            raise ValueError(f"seek and n_frames must be >= 0 (got {seek}, {n_frames})")
        stop = min(seek + n_frames, self.n_frames)
        if self._small is not None:
            return self._small[:, seek:stop].copy()
        if stop <= seek:
            return np.zeros((self.n_mels, 0), np.float32)
        top = self.global_max - 8.0
        out = np.empty((self.n_mels, stop - seek), np.float32)
        for f0 in range(seek, stop, self.block):
            f1 = min(f0 + self.block, stop)
            out[:, f0 - seek : f1 - seek] = (np.maximum(self._log_spec(f0, f1), top) + 4.0) / 4.0
        return out

    def windows(self, step: int = N_FRAMES):
        """(seek, window) for seek = 0, step, 2 * step, ... while seek < n_frames."""
        for seek in range(0, self.n_frames, step):
            yield seek, self.window(seek, step)

    def _padded(self, start: int, stop: int) -> np.ndarray:
        """The zero-padded audio's samples [start, stop), 0 <= start <= stop <= n_padded, float64."""
        out = np.zeros(stop - start, np.float64)
        n = min(stop, self.stream.n_samples) - start
        if n > 0:
            out[:n] = self.stream.read(start, n)
        return out

    def _log_spec(self, f0: int, f1: int) -> np.ndarray:
        """log10(max(mel, 1e-10)) of frames [f0, f1), float64 [n_mels, f1 - f0], before the clamp."""
        half, m = N_FFT // 2, self._n_padded
        # Frame f reads the reflect-padded signal at [f * HOP - half, f * HOP + half), in the padded
        # audio's coordinates; indices before 0 or from m on reflect back into [0, m).
        lo, hi = f0 * HOP_LENGTH - half, (f1 - 1) * HOP_LENGTH + half
        if lo >= 0 and hi <= m:
            signal = self._padded(lo, hi)
        else:
            idx = np.arange(lo, hi)
            idx = np.where(idx < 0, -idx, idx)
            idx = np.where(idx >= m, 2 * (m - 1) - idx, idx)
            lo, hi = int(idx.min()), int(idx.max()) + 1
            signal = self._padded(lo, hi)[idx - lo]
        frames = np.lib.stride_tricks.sliding_window_view(signal, N_FFT)[::HOP_LENGTH]
        magnitudes = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # [frames, 201]
        mel = magnitudes @ self._filters_t  # [frames, n_mels]: BLAS-friendly layout
        return np.log10(np.maximum(mel, 1e-10)).T
