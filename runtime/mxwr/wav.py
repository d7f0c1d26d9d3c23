"""WAV files decoded natively: PCM of 8, 16, 24 or 32 bits and float of 32 or 64, any channel count.

`wav_layout(path)` reads the headers only; `WavLayout.read_mono(f, start, stop)` decodes a range of
frames, so a file is never read whole. Samples are float32 in [-1, 1), channels averaged, at the
file's own rate.

Each channel is first brought to the 16-bit grid as ffmpeg's conversion to `s16le` (openai-whisper's
`load_audio`) brings it: wider PCM keeps its top 16 bits, floats are scaled by 2^15, rounded to
nearest even and saturated. So a mono WAV of any encoding reads as openai-whisper reads it, sample
for sample — non-finite floats included, since one NaN must not change a transcript: ffmpeg's
x86-64 conversion of 32-bit floats (SSE2 `cvtps2dq`, then saturation to 16 bits) makes NaN, ±inf and
anything beyond ±2^16 the most negative sample, -1; 64-bit floats go through C's `lrint` and an
int conversion, which makes a non-finite one 0. (In the last n mod 16
samples of a file ffmpeg's scalar loop makes a non-finite 32-bit float 0; that millisecond is
not reproduced.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import AudioError

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
# Sample rates read natively; outside them a header is taken as corrupt, not resampled: a header
# claiming 1 Hz would turn each byte into 16,000 samples.
MIN_RATE, MAX_RATE = 1_000, 768_000


class UnsupportedWav(Exception):
    """A valid WAV whose encoding is not decoded here (ffmpeg may)."""


def is_wav(path: Path) -> bool:
    """Whether the file starts as a RIFF (or RF64) WAVE file does."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"


@dataclass(frozen=True)
class WavLayout:
    tag: int
    channels: int
    rate: int
    block_align: int
    bits: int
    offset: int  # of the data chunk's payload in the file
    frames: int  # whole frames present (a truncated file keeps what it has, as ffmpeg does)

    def read_mono(self, f: BinaryIO, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) of the open file, channels averaged: float32 at the file's rate."""
        start, stop = max(0, start), min(stop, self.frames)
        if stop <= start:
            return np.zeros(0, np.float32)
        f.seek(self.offset + start * self.block_align)
        payload = f.read((stop - start) * self.block_align)
        return self._decode(payload).mean(axis=1, dtype=np.float32)

    def _decode(self, payload: bytes) -> np.ndarray:
        """Whole frames of a data payload -> samples [frames, channels] float32 in [-1, 1)."""
        channels, width = self.channels, self.bits // 8
        frames = len(payload) // self.block_align
        raw = np.frombuffer(payload, dtype=np.uint8, count=frames * self.block_align)
        raw = raw.reshape(frames, self.block_align)[:, : channels * width].reshape(frames, channels, width)
        if self.tag == _PCM and self.bits == 8:
            return (raw[..., 0].astype(np.float32) - 128.0) / 128.0
        if self.tag == _PCM:
            # The top two bytes of each little-endian sample: the 16-bit sample ffmpeg keeps.
            top = np.ascontiguousarray(raw[..., width - 2 :]).view("<i2")[..., 0]
            return top.astype(np.float32) / 32768.0
        floats = raw.copy().view("<f4" if self.bits == 32 else "<f8")[..., 0]
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.rint(floats * 32768.0)
            if self.bits == 32:  # cvtps2dq: NaN, ±inf and whatever int32 cannot hold become INT32_MIN
                ints = np.where(np.abs(scaled) < 2.0**31, scaled, -(2.0**31))
            else:  # lrint to a 64-bit long (INT64_MIN when it cannot), then kept as a 32-bit int
                wide = np.where(np.abs(scaled) < 2.0**63, scaled, 0.0).astype(np.int64)
                ints = wide.astype(np.int32)  # the low 32 bits, as C's conversion keeps them
        return np.clip(ints, -32768, 32767).astype(np.float32) / 32768.0


def wav_layout(path: Path) -> WavLayout:
    """Walks the RIFF chunks (headers only, never the payload); the last fmt / data chunk wins.

    AudioError for a broken file, UnsupportedWav for an encoding not decoded here."""
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
    if channels == 0 or block_align == 0:
        raise AudioError(f"cannot decode {path}: WAV header has zero channels or block size")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"cannot decode {path}: WAV sample rate {rate} Hz is outside "
                         f"{MIN_RATE}-{MAX_RATE} Hz")
    if not ((tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits in (32, 64))):
        raise UnsupportedWav(f"WAV encoding {tag:#06x} with {bits} bits is not decoded natively")
    if block_align < channels * (bits // 8):
        raise AudioError(f"cannot decode {path}: WAV block size {block_align} is too small for "
                         f"{channels} channels of {bits} bits")
    return WavLayout(tag, channels, rate, block_align, bits, data[0], data[1] // block_align)
