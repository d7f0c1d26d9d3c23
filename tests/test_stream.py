"""Streaming audio (`open_audio`) and log-mel (`LogMelStream`): the whole-array results, bounded memory."""

from __future__ import annotations

import os
import struct
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from support import DEV
from mxwr.audio import AudioStream, load_audio, open_audio
from mxwr.constants import N_FRAMES, N_SAMPLES
from mxwr.errors import AudioError
from mxwr.mel import LogMelStream, log_mel_spectrogram

DEV_CLIPS = sorted(p.name for p in DEV.glob("*.wav")) + ["jfk.flac"]
LONG = DEV / "long_osr_us_000_0034_8k.wav"


def mel_filters(n_mels: int = 80) -> np.ndarray:
    import whisper

    return np.load(Path(whisper.__file__).parent / "assets" / "mel_filters.npz")[f"mel_{n_mels}"]


def encode(samples: np.ndarray, encoding: str) -> tuple[int, int, bytes]:
    """samples [n, channels] in [-1, 1) -> (format tag, bits, little-endian frames)."""
    if encoding == "pcm8":
        return 1, 8, (np.round(samples * 127) + 128).astype(np.uint8).tobytes()
    if encoding.startswith("pcm"):
        bits = int(encoding[3:])
        ints = np.round(samples * (2 ** (bits - 1) - 1)).astype("<i4")
        return 1, bits, ints.view(np.uint8).reshape(*ints.shape, 4)[..., : bits // 8].tobytes()
    bits = int(encoding[5:])
    return 3, bits, samples.astype(f"<f{bits // 8}").tobytes()


def wav_header(tag: int, channels: int, rate: int, bits: int, data_len: int, extensible: bool = False,
               junk: bytes = b"") -> bytes:
    """RIFF/WAVE up to the data chunk's payload; `junk` chunks go before fmt."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block, block, bits)
    if extensible:  # cbSize, valid bits, channel mask, sub-format GUID (starts with the tag)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes(14)
    body = b"WAVE" + junk + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_len)
    return b"RIFF" + struct.pack("<I", len(body) + data_len) + body


def write_wav(path: Path, samples: np.ndarray, rate: int, encoding: str, **layout) -> Path:
    tag, bits, data = encode(samples, encoding)
    path.write_bytes(wav_header(tag, samples.shape[1], rate, bits, len(data), **layout) + data)
    return path


def signal(rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 440.0 * t)[:, None] * np.linspace(1, 0.5, channels)[None, :]
    return np.clip(tone + 0.1 * rng.standard_normal((len(t), channels)), -0.99, 0.99)


def spans(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(start, count) pairs: the whole, the edges, past the end, and random ones."""
    rng = np.random.default_rng(seed)
    out = [(0, n), (0, n + 1000), (0, 1), (n - 1, 5), (n, 10), (n + 7, 3), (5, 0)]
    out += [(int(s), int(c)) for s, c in zip(rng.integers(0, n, 8), rng.integers(1, 40000, 8))]
    return out


def check_reads(path: Path, exact: bool = True) -> None:
    expected = load_audio(path)
    with open_audio(path) as stream:
        assert stream.n_samples == len(expected)
        for start, count in spans(len(expected)):
            got = stream.read(start, count)
            want = expected[start : start + count]
            assert got.dtype == np.float32 and got.shape == want.shape, (start, count)
            if exact:
                np.testing.assert_array_equal(got, want)
            else:  # resampled block by block: the same arithmetic, so float32 rounding at most
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# --- open_audio ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DEV_CLIPS)
def test_dev_clips_read_as_load_audio(name):
    check_reads(DEV / name)


@pytest.mark.parametrize("encoding, channels, rate", [
    ("pcm24", 2, 44100),  # resampled
    ("float32", 1, 48000),
    ("pcm8", 1, 8000),
    ("float64", 3, 22050),
    ("pcm16", 2, 16000),  # 16 kHz: decoded straight from the file, channels averaged
    ("pcm32", 1, 16000),
])
def test_synthetic_wavs_read_as_load_audio(tmp_path, encoding, channels, rate):
    path = write_wav(tmp_path / "x.wav", signal(rate, 2.3, channels), rate, encoding)
    check_reads(path, exact=rate == 16000)


def test_unusual_wav_layouts_read_as_load_audio(tmp_path):
    """WAVE_FORMAT_EXTENSIBLE, an odd-sized chunk (pad byte) before fmt, a truncated data chunk."""
    x = signal(44100, 1.5, 2)
    tag, bits, data = encode(x, "pcm16")
    header = wav_header(tag, 2, 44100, bits, len(data), extensible=True, junk=b"LIST\x03\x00\x00\x00abc\x00")
    path = tmp_path / "odd.wav"
    path.write_bytes(header + data[: len(data) - 1001])  # ends mid-frame
    check_reads(path, exact=False)
    assert open_audio(path).n_samples == len(load_audio(path)) > 0


def test_wav_encoding_decoded_by_ffmpeg(tmp_path):
    """An A-law WAV is not decoded natively: both go through ffmpeg (resampling 8 kHz -> 16 kHz)."""
    path = tmp_path / "alaw.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(DEV / "jfk_inaugural.wav"),
                    "-ar", "8000", "-acodec", "pcm_alaw", str(path)], check=True)
    check_reads(path)


def test_errors_are_load_audios(tmp_path, monkeypatch):
    (tmp_path / "junk.mp3").write_bytes(os.urandom(3000))
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
    cases = [tmp_path / "missing.wav", tmp_path, tmp_path / "junk.mp3", tmp_path / "bad.wav"]
    for path in cases:
        with pytest.raises(AudioError) as want:
            load_audio(path)
        with pytest.raises(AudioError) as got:
            open_audio(path, tmpdir=tmp_path)
        assert str(got.value) == str(want.value) and "\n" not in str(got.value)
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg
    with pytest.raises(AudioError, match="not a WAV file, and ffmpeg .* is not on PATH"):
        open_audio(DEV / "jfk.flac")
    assert open_audio(DEV / "jfk_inaugural.wav").n_samples == 176000  # WAV needs no ffmpeg


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files in /proc/self/fd")
def test_close_releases_the_temporary_file(tmp_path):
    wav = write_wav(tmp_path / "x.wav", signal(48000, 1.0, 1), 48000, "float32")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for path in (wav, DEV / "jfk.flac"):
        with open_audio(path, tmpdir=scratch) as stream:
            assert len(stream.read(1000, 10)) == 10
            assert list(scratch.iterdir()) == []  # unlinked from the start: nothing to leave behind
        assert stream.closed and len(os.listdir("/proc/self/fd")) == before
        with pytest.raises(ValueError, match="closed"):
            stream.read(0, 1)


# --- LogMelStream -------------------------------------------------------------------------------


def seeks(n_frames: int) -> list[int]:
    last = (n_frames - 1) // 3000 * 3000  # the last window transcription reads (partial)
    return sorted({0, 1234, 3000, last, n_frames - 1500, n_frames - 1, n_frames, n_frames + 5})


@pytest.mark.parametrize("name", ["long_osr_us_000_0034_8k.wav", "jfk.flac"])
def test_log_mel_windows_equal_openai_whisper(name):
    import whisper

    reference = whisper.log_mel_spectrogram(whisper.load_audio(str(DEV / name)), padding=N_SAMPLES).numpy()
    audio = load_audio(DEV / name)
    numpy_reference = log_mel_spectrogram(np.pad(audio, (0, N_SAMPLES)), mel_filters())
    with open_audio(DEV / name) as stream:
        mels = LogMelStream(stream, mel_filters())
        assert mels.n_frames == reference.shape[1] == numpy_reference.shape[1]
        for seek in seeks(mels.n_frames):
            window = mels.window(seek)
            assert window.dtype == np.float32
            assert window.shape == reference[:, seek : seek + 3000].shape, seek
            if window.size:
                assert np.abs(window - reference[:, seek : seek + 3000]).max() <= 1e-3, seek
                assert np.abs(window - numpy_reference[:, seek : seek + 3000]).max() <= 1e-5, seek
        whole = np.concatenate([mels.window(seek) for seek in range(0, mels.n_frames, N_FRAMES)], axis=1)
        assert np.abs(whole - numpy_reference).max() <= 1e-5


def test_log_mel_options():
    """128 mels, no padding (the reflection then meets real audio), odd windows, an array as input."""
    import whisper

    audio = load_audio(DEV / "jfk.flac")
    reference = whisper.log_mel_spectrogram(audio, n_mels=128).numpy()  # padding=0
    mels = LogMelStream(audio, mel_filters(128), padding=0, block=777)
    assert mels.n_frames == reference.shape[1] == 1100
    for seek, n in [(0, 3000), (0, 1), (999, 101), (1050, 3000)]:
        assert np.abs(mels.window(seek, n) - reference[:, seek : seek + n]).max() <= 1e-3
    assert mels.window(17, 0).shape == mels.window(1100).shape == (128, 0)
    np.testing.assert_allclose(mels.window(0), log_mel_spectrogram(audio, mel_filters(128)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        mels.window(-1)


# --- bounded memory -----------------------------------------------------------------------------

TILE = 160_000  # 10 s: silence, a loud tone, noise, silence (a multiple of HOP_LENGTH)
HOURS = 1


def tile() -> np.ndarray:
    """int16 samples."""
    x = np.zeros(TILE)
    x[8000:40000] = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(32000) / 16000)
    x[40000 : TILE - 8000] = 0.05 * np.random.default_rng(1).standard_normal(TILE - 48000)
    return np.round(x * 32767).astype("<i2")


def test_long_file_log_mel_in_bounded_memory(tmp_path):
    """One hour of 16 kHz PCM16 (115 MB of samples, 230 MB as float32): global max + windows.

    Bound: a block of 1000 frames needs its float64 samples (1.3 MB), windowed frames (3.2 MB),
    spectrum (3.2 MB complex), magnitudes (1.6 MB x 2) and mels (0.6 MB), plus one
    3000-frame window out (1 MB). 32 MB leaves headroom yet is well under the file's samples (and
    the whole-array computation of an hour needs gigabytes).

    The file is 360 copies of a 10 s tile that starts and ends with silence, so every frame equals
    the same frame of any other tile: a reference computed whole on a tile-aligned stretch holding
    one full tile has the global max, and its frames are the whole file's (silence on both sides).
    """
    one = tile()
    n_tiles, tail = HOURS * 3600 * 16000 // TILE, 77  # a trailing partial hop of silence
    n = n_tiles * TILE + tail
    path = tmp_path / "hour.wav"
    with open(path, "wb") as f:
        pcm = one.tobytes()
        f.write(wav_header(1, 1, 16000, 16, 2 * n))
        for _ in range(n_tiles):
            f.write(pcm)
        f.write(bytes(2 * tail))
    assert path.stat().st_size > 115_000_000

    # The first window, one mid-file, one holding the end of the audio, a partial one at the very end.
    spots = [0, n_tiles // 2 * TILE // 160 + 777, n // 160 - 500, (n + N_SAMPLES) // 160 - 1500]
    tracemalloc.start()
    try:
        with open_audio(path) as stream:
            mels = LogMelStream(stream, mel_filters())
            global_max = mels.global_max
            windows = [mels.window(seek) for seek in spots]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\ntracemalloc peak {peak / 1e6:.1f} MB for {n / 16000 / 3600:.2f} h ({2 * n / 1e6:.0f} MB as PCM16)")
    assert peak < 32e6, peak

    assert mels.n_frames == (n + N_SAMPLES) // 160
    one = one.astype(np.float32) / 32768.0  # as decoded
    for seek, window in zip(spots, windows):
        # A tile-aligned stretch of the padded audio around the window, holding at least one full tile.
        first = max(0, min(n_tiles - 1, (seek * 160 - 200) // TILE - 1))
        last = min(n_tiles, -(-((seek + 3000) * 160 + 200) // TILE) + 1)
        end = [np.zeros(tail + N_SAMPLES, np.float32)] if last == n_tiles else []
        stretch = np.concatenate([np.tile(one, last - first), *end])
        reference = log_mel_spectrogram(stretch, mel_filters())
        offset = first * TILE // 160
        expected = reference[:, seek - offset : seek - offset + 3000]
        assert window.shape == expected.shape and window.shape[1] in (3000, 1500)
        assert np.abs(window - expected).max() <= 1e-5, seek
        if seek == 0:  # three tiles, so the loudest frame: (global max + 4) / 4
            assert global_max == pytest.approx(4 * float(expected.max()) - 4, abs=1e-4)


def test_conversions_in_bounded_memory(tmp_path):
    """Resampling a 10-minute 44.1 kHz stereo WAV and streaming ffmpeg's output of a 30-minute file
    into the temporary file both peak at a few MB (outputs: 38 MB and 115 MB of float32)."""
    wav = tmp_path / "cd.wav"
    seconds, rate = 600, 44100
    block = signal(rate, 10.0, 2)
    tag, bits, data = encode(block, "pcm16")
    with open(wav, "wb") as f:
        f.write(wav_header(tag, 2, rate, bits, len(data) * seconds // 10))
        for _ in range(seconds // 10):
            f.write(data)
    alaw = tmp_path / "long_alaw.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=8000:duration=1800", "-acodec", "pcm_alaw", str(alaw)], check=True)
    for path, n in [(wav, seconds * 16000), (alaw, 1800 * 16000)]:
        tracemalloc.start()
        try:
            with open_audio(path, tmpdir=tmp_path) as stream:
                assert stream.n_samples == n
                assert len(stream.read(n - 1000, 5000)) == 1000
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        print(f"\n{path.name}: tracemalloc peak {peak / 1e6:.1f} MB for {4 * n / 1e6:.0f} MB of float32 out")
        assert peak < 16e6, (path.name, peak)
    # The resampled blocks equal the whole-array resample at a block seam deep inside the file.
    head = tmp_path / "head.wav"
    write_wav(head, np.tile(block, (2, 1)), rate, "pcm16")
    with open_audio(head) as short, open_audio(wav) as long:
        np.testing.assert_allclose(long.read(8192 * 30 - 500, 1000), short.read(8192 * 30 - 500, 1000),
                                   rtol=0, atol=1e-6)


def test_array_stream():
    x = np.arange(10, dtype=np.float64)
    stream = AudioStream.from_array(x)
    assert stream.n_samples == 10 and stream.read(8, 5).tolist() == [8.0, 9.0]
    assert stream.read(3, 2).dtype == np.float32
