"""Audio in: WAV read natively (no ffmpeg), anything else through ffmpeg when it is on PATH.

Output is what openai-whisper's `load_audio` produces: mono float32 at 16 kHz, in [-1, 1).
The pieces here (WAV layout, frame decoding, resampling blocks, the ffmpeg command) are shared with
`mxwr.stream`, which gives the same samples with bounded memory.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .constants import N_SAMPLES, SAMPLE_RATE
from .errors import AudioError

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    path = Path(path)
    layout = _inspect(path)
    if layout is None:
        return _ffmpeg(path, sr)
    with open(path, "rb") as f:
        mono = _read_mono(f, layout, 0, layout.frames)
    return resample(mono, layout.rate, sr)


class _Unsupported(Exception):
    """A valid WAV whose encoding we do not decode natively (ffmpeg may)."""


@dataclass(frozen=True)
class _WavLayout:
    tag: int
    channels: int
    rate: int
    block_align: int
    bits: int
    offset: int  # of the data chunk's payload in the file
    frames: int  # whole frames present (a truncated file keeps what it has, as ffmpeg does)


def _inspect(path: Path) -> _WavLayout | None:
    """Checks that `path` is decodable: its WAV layout to decode natively, or None for ffmpeg."""
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"audio path is a directory: {path}")
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        try:
            return _wav_layout(path)
        except _Unsupported as e:
            if shutil.which("ffmpeg") is None:
                raise AudioError(f"cannot decode {path}: {e}, and ffmpeg is not on PATH") from None
            return None
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            f"cannot decode {path}: not a WAV file, and ffmpeg (needed for other formats) is not on PATH"
        )
    return None


def _wav_layout(path: Path) -> _WavLayout:
    """Walks the RIFF chunks (headers only, never the payload); the last fmt / data chunk wins."""
    size = path.stat().st_size
    pos, fmt, data = 12, None, None
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            present = min(chunk_size, size - pos - 8)
            if chunk_id == b"fmt ":
                fmt = f.read(min(present, 64))  # every field we read is in the first 26 bytes
            elif chunk_id == b"data":
                data = (pos + 8, present)
            pos += 8 + chunk_size + (chunk_size & 1)
    if fmt is None or len(fmt) < 16 or data is None:
        raise AudioError(f"cannot decode {path}: WAV file without a valid fmt and data chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if channels == 0 or rate == 0 or block_align == 0:
        raise AudioError(f"cannot decode {path}: WAV header has zero channels, rate or block size")
    if not ((tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits in (32, 64))):
        raise _Unsupported(f"WAV encoding {tag:#06x} with {bits} bits is not decoded natively")
    if block_align < channels * (bits // 8):
        raise AudioError(f"cannot decode {path}: WAV block size {block_align} is too small for "
                         f"{channels} channels of {bits} bits")
    return _WavLayout(tag, channels, rate, block_align, bits, data[0], data[1] // block_align)


def _decode(payload: bytes, layout: _WavLayout) -> np.ndarray:
    """Whole frames of a data payload -> samples [frames, channels] float32 in [-1, 1)."""
    channels, block_align, bits = layout.channels, layout.block_align, layout.bits
    width = bits // 8
    frames = len(payload) // block_align
    raw = np.frombuffer(payload, dtype=np.uint8, count=frames * block_align)
    raw = raw.reshape(frames, block_align)[:, : channels * width].reshape(frames, channels, width)
    if layout.tag == _PCM and bits == 8:
        return (raw[..., 0].astype(np.float32) - 128.0) / 128.0
    if layout.tag == _PCM:
        # Sign-extend each little-endian sample into an int32, then scale by the full range.
        padded = np.zeros((frames, channels, 4), dtype=np.uint8)
        padded[..., 4 - width :] = raw
        samples = padded.view("<i4")[..., 0].astype(np.float64) / 2147483648.0
        return samples.astype(np.float32)
    return raw.copy().view("<f4" if bits == 32 else "<f8")[..., 0].astype(np.float32)


def _read_mono(f: BinaryIO, layout: _WavLayout, start: int, stop: int) -> np.ndarray:
    """Frames [start, stop) of an open WAV file, channels averaged: float32 at the file's rate."""
    start, stop = max(0, start), min(stop, layout.frames)
    if stop <= start:
        return np.zeros(0, np.float32)
    f.seek(layout.offset + start * layout.block_align)
    payload = f.read((stop - start) * layout.block_align)
    return _decode(payload, layout).mean(axis=1, dtype=np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Returns (samples [n, channels] float32 in [-1, 1), sample rate)."""
    path = Path(path)
    layout = _wav_layout(path)
    with open(path, "rb") as f:
        f.seek(layout.offset)
        payload = f.read(layout.frames * layout.block_align)
    return _decode(payload, layout), layout.rate


_HALF = 32  # taps either side of each output sample, in input samples
_TAPS = np.arange(-_HALF + 1, _HALF + 1)[None, :]


@lru_cache(maxsize=16)
def _polyphase(rate: int, target: int) -> tuple[int, int, np.ndarray]:
    """(up, down, filters [up, 2 * _HALF] float32) for resampling `rate` -> `target`."""
    from math import gcd

    g = gcd(rate, target)
    up, down = target // g, rate // g
    cutoff = min(1.0, target / rate) * 0.95
    # For output n the input position is n*down/up; phase p = (n*down) % up.
    phases = np.arange(up)[:, None] / up
    t = _TAPS - phases  # distance (in input samples) of each tap from the output position
    h = cutoff * np.sinc(cutoff * t) * np.kaiser(2 * _HALF, 8.6)[None, :]
    h = (h / h.sum(axis=1, keepdims=True)).astype(np.float32)
    h.setflags(write=False)
    return up, down, h


def _resample_span(start: int, stop: int, up: int, down: int) -> tuple[int, int]:
    """The input samples [lo, hi) that outputs [start, stop) read (zeros outside the input)."""
    return (start * down) // up - _HALF + 1, ((stop - 1) * down) // up + _HALF + 1


def _resample_block(seg: np.ndarray, origin: int, start: int, stop: int, up: int, down: int,
                    h: np.ndarray) -> np.ndarray:
    """Outputs [start, stop), where seg[k] is input sample origin + k (zero-filled past the input)."""
    n = np.arange(start, stop)
    base, phase = (n * down) // up, (n * down) % up
    windows = seg[(base - origin)[:, None] + _TAPS]
    return np.einsum("ij,ij->i", windows, h[phase])


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE, chunk: int = 1 << 16) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed sinc), chunked to bound memory."""
    if rate == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    up, down, h = _polyphase(rate, target)
    n_out = (len(x) * up + down - 1) // down
    padded = np.concatenate([np.zeros(_HALF, np.float32), x.astype(np.float32), np.zeros(_HALF + 1, np.float32)])
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, chunk):
        stop = min(start + chunk, n_out)
        out[start:stop] = _resample_block(padded, -_HALF, start, stop, up, down, h)
    return out


def _ffmpeg_cmd(path: Path, sr: int) -> list[str]:
    # The same invocation as openai-whisper's load_audio, so non-WAV input decodes identically.
    return ["ffmpeg", "-nostdin", "-threads", "0", "-i", str(path), "-f", "s16le", "-ac", "1",
            "-acodec", "pcm_s16le", "-ar", str(sr), "-"]


def _ffmpeg_error(path: Path, returncode: int, stderr: bytes) -> AudioError:
    lines = [l for l in stderr.decode(errors="replace").splitlines() if l.strip()]
    reason = lines[-1].strip() if lines else f"exit code {returncode}"
    return AudioError(f"cannot decode {path}: ffmpeg: {reason}")


def _ffmpeg(path: Path, sr: int) -> np.ndarray:
    proc = subprocess.run(_ffmpeg_cmd(path, sr), capture_output=True)
    if proc.returncode != 0:
        raise _ffmpeg_error(path, proc.returncode, proc.stderr)
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))
