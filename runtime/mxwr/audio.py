"""Audio in, as openai-whisper's `load_audio` gives it: mono float32 at 16 kHz, in [-1, 1).

`open_audio(path)` gives the samples as an `AudioStream`, read range by range, so memory stays
bounded however long the file:

- a 16 kHz WAV that `mxwr.wav` decodes is decoded straight from the file, range by range;
- a WAV at another rate is decoded and resampled block by block into an anonymous temporary
  float32 file that is memory-mapped;
- anything else is decoded by ffmpeg (openai-whisper's command line, so the samples are its),
  its output streamed in chunks into such a temporary file.

The temporary file is unlinked from the start (it disappears when the stream is closed, or when
the process ends), so nothing is left behind. `load_audio(path)` is the whole stream read at once.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .constants import N_SAMPLES, SAMPLE_RATE
from .errors import AudioError
from .resample import resampled_blocks
from .wav import UnsupportedWav, WavLayout, is_wav, wav_layout

_PIPE_CHUNK = 1 << 20  # bytes of ffmpeg output read at a time


def load_audio(path: str | Path, max_duration: float | None = None) -> np.ndarray:
    """The whole file's samples, as one array."""
    with open_audio(path, max_duration=max_duration) as stream:
        return stream.read(0, stream.n_samples)


def open_audio(path: str | Path, tmpdir: str | Path | None = None, max_duration: float | None = None) -> AudioStream:
    """The file's samples as a stream; AudioError for a missing file, a directory or other file
    that is not a regular one, no decoder, what ffmpeg fails on, or audio longer than
    `max_duration` seconds (refused before it is decoded where the header tells the length).

    `tmpdir`: where the temporary 16 kHz float32 file goes when one is needed (default: the
    system's temporary folder); it takes 4 bytes a sample (~0.7 GB for 3 hours).
    """
    path = Path(path)
    limit = None if max_duration is None else int(max_duration * SAMPLE_RATE)
    layout = _native_layout(path)
    if layout is None:
        return _from_ffmpeg(path, tmpdir, limit)
    if limit is not None and layout.frames > max_duration * layout.rate:
        raise _too_long(path, max_duration)
    if layout.rate == SAMPLE_RATE:
        return _from_wav(path, layout)
    return _from_resampled_wav(path, layout, tmpdir)


def _too_long(path: Path, max_duration: float) -> AudioError:
    return AudioError(f"{path} is longer than --max_duration ({max_duration:g} s)")


def pad_or_trim(array: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    """openai-whisper's `pad_or_trim` along the last axis (samples, or a log-mel's frames): cut to
    `length`, or zero-padded to it."""
    n = array.shape[-1]
    if n >= length:
        return array[..., :length]
    return np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, length - n)])


class AudioStream:
    """Mono float32 samples at 16 kHz, read range by range. Close it (or use `with`) when done."""

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


def _native_layout(path: Path) -> WavLayout | None:
    """Checks that `path` is decodable: its WAV layout to decode natively, or None for ffmpeg."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioError(f"audio file not found: {path}") from None
    except OSError as e:
        raise AudioError(f"cannot open audio {path}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"audio path is a directory: {path}")
    if not stat.S_ISREG(mode):  # a FIFO or a device would block, or never end
        raise AudioError(f"audio path is not a regular file: {path}")
    if is_wav(path):
        try:
            return wav_layout(path)
        except UnsupportedWav as e:
            if shutil.which("ffmpeg") is None:
                raise AudioError(f"cannot decode {path}: {e}, and ffmpeg is not on PATH") from None
            return None
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            f"cannot decode {path}: not a WAV file, and ffmpeg (needed for other formats) is not on PATH"
        )
    return None


def _from_wav(path: Path, layout: WavLayout) -> AudioStream:
    f = open(path, "rb")
    return AudioStream(layout.frames, lambda start, stop: layout.read_mono(f, start, stop), f.close, path)


def _from_resampled_wav(path: Path, layout: WavLayout, tmpdir: str | Path | None) -> AudioStream:
    tmp = tempfile.TemporaryFile(dir=tmpdir)
    n = 0
    try:
        with open(path, "rb") as f:
            for block in resampled_blocks(lambda a, b: layout.read_mono(f, a, b), layout.frames, layout.rate):
                tmp.write(block.tobytes())
                n += len(block)
    except BaseException:
        tmp.close()
        raise
    return _from_temp(path, tmp, n)


def _from_ffmpeg(path: Path, tmpdir: str | Path | None, limit: int | None = None) -> AudioStream:
    tmp = tempfile.TemporaryFile(dir=tmpdir)
    err = tempfile.TemporaryFile(dir=tmpdir)  # a file, not a pipe: ffmpeg's log never blocks it
    n, carry = 0, b""
    try:
        proc = subprocess.Popen(_ffmpeg_cmd(path), stdout=subprocess.PIPE, stderr=err)
        try:
            while chunk := proc.stdout.read(_PIPE_CHUNK):
                chunk = carry + chunk
                whole = len(chunk) // 2 * 2
                carry = chunk[whole:]
                samples = np.frombuffer(chunk, np.int16, count=whole // 2).astype(np.float32) / 32768.0
                tmp.write(samples.tobytes())
                n += len(samples)
                if limit is not None and n > limit:
                    raise _too_long(path, limit / SAMPLE_RATE)
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


def _ffmpeg_cmd(path: Path) -> list[str]:
    # The same invocation as openai-whisper's load_audio, so non-WAV input decodes identically;
    # but the input is named with the file: protocol, so that no file name ("concat:...",
    # "http://...", "-") is read as another protocol or as standard input.
    return ["ffmpeg", "-nostdin", "-threads", "0", "-i", f"file:{path}", "-f", "s16le", "-ac", "1",
            "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-"]


def _ffmpeg_error(path: Path, returncode: int, stderr: bytes) -> AudioError:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    reason = lines[-1].strip() if lines else f"exit code {returncode}"
    return AudioError(f"cannot decode {path}: ffmpeg: {reason}")
