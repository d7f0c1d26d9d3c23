"""Audio in: WAV read natively (no ffmpeg), anything else through ffmpeg when it is on PATH.

Output is what openai-whisper's `load_audio` produces: mono float32 at 16 kHz, in [-1, 1).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from .dims import N_SAMPLES, SAMPLE_RATE
from .errors import AudioError

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"audio path is a directory: {path}")
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        try:
            samples, rate = read_wav(path)
        except _Unsupported as e:
            if shutil.which("ffmpeg") is None:
                raise AudioError(f"cannot decode {path}: {e}, and ffmpeg is not on PATH") from None
            return _ffmpeg(path, sr)
        return resample(samples.mean(axis=1, dtype=np.float32), rate, sr)
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            f"cannot decode {path}: not a WAV file, and ffmpeg (needed for other formats) is not on PATH"
        )
    return _ffmpeg(path, sr)


class _Unsupported(Exception):
    """A valid WAV whose encoding we do not decode natively (ffmpeg may)."""


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Returns (samples [n, channels] float32 in [-1, 1), sample rate)."""
    data = path.read_bytes()
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            payload = body  # a truncated file keeps what it has, as ffmpeg does
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or payload is None:
        raise AudioError(f"cannot decode {path}: WAV file without a valid fmt and data chunk")
    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the sub-format GUID
    if channels == 0 or rate == 0 or block_align == 0:
        raise AudioError(f"cannot decode {path}: WAV header has zero channels, rate or block size")
    width = bits // 8
    frames = len(payload) // block_align
    raw = np.frombuffer(payload, dtype=np.uint8, count=frames * block_align)
    raw = raw.reshape(frames, block_align)[:, : channels * width].reshape(frames, channels, width)
    if tag == _PCM and bits == 8:
        samples = (raw[..., 0].astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and bits in (16, 24, 32):
        # Sign-extend each little-endian sample into an int32, then scale by the full range.
        padded = np.zeros((frames, channels, 4), dtype=np.uint8)
        padded[..., 4 - width :] = raw
        samples = padded.view("<i4")[..., 0].astype(np.float64) / 2147483648.0
        samples = samples.astype(np.float32)
    elif tag == _FLOAT and bits in (32, 64):
        samples = raw.copy().view("<f4" if bits == 32 else "<f8")[..., 0].astype(np.float32)
    else:
        raise _Unsupported(f"WAV encoding {tag:#06x} with {bits} bits is not decoded natively")
    return samples, rate


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE, chunk: int = 1 << 16) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed sinc), chunked to bound memory."""
    if rate == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    from math import gcd

    g = gcd(rate, target)
    up, down = target // g, rate // g
    half = 32  # taps either side of each output sample, in input samples
    cutoff = min(1.0, target / rate) * 0.95
    # For output n the input position is n*down/up; phase p = (n*down) % up.
    phases = np.arange(up)[:, None] / up
    taps = np.arange(-half + 1, half + 1)[None, :]
    t = taps - phases  # distance (in input samples) of each tap from the output position
    h = cutoff * np.sinc(cutoff * t) * np.kaiser(2 * half, 8.6)[None, :]
    h = (h / h.sum(axis=1, keepdims=True)).astype(np.float32)
    n_out = (len(x) * up + down - 1) // down
    padded = np.concatenate([np.zeros(half, np.float32), x.astype(np.float32), np.zeros(half + 1, np.float32)])
    out = np.empty(n_out, dtype=np.float32)
    for start in range(0, n_out, chunk):
        n = np.arange(start, min(start + chunk, n_out))
        base, phase = (n * down) // up, (n * down) % up
        windows = padded[base[:, None] + half + taps]
        out[n] = np.einsum("ij,ij->i", windows, h[phase])
    return out


def _ffmpeg(path: Path, sr: int) -> np.ndarray:
    # The same invocation as openai-whisper's load_audio, so non-WAV input decodes identically.
    cmd = ["ffmpeg", "-nostdin", "-threads", "0", "-i", str(path), "-f", "s16le", "-ac", "1",
           "-acodec", "pcm_s16le", "-ar", str(sr), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.decode(errors="replace").splitlines() if l.strip()]
        reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise AudioError(f"cannot decode {path}: ffmpeg: {reason}")
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))
