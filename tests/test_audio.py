"""The runtime's audio front end: WAV decoding of every common encoding, resampling, errors."""

from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest

from support import DEV
from mxwr.audio import load_audio
from mxwr.resample import resampled_blocks
from mxwr.errors import AudioError


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """The streaming resampler's blocks over a whole array."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([np.zeros(0, np.float32), *resampled_blocks(lambda a, b: x[a:b], len(x), rate, target)])


def write_wav(path, samples: np.ndarray, rate: int, encoding: str) -> None:
    """samples [n, channels] in [-1, 1); encoding: pcm8, pcm16, pcm24, pcm32, float32, float64."""
    if encoding == "pcm8":
        data, tag, bits = (np.round(samples * 127) + 128).astype(np.uint8).tobytes(), 1, 8
    elif encoding in ("pcm16", "pcm24", "pcm32"):
        bits = int(encoding[3:])
        ints = np.round(samples * (2 ** (bits - 1) - 1)).astype("<i4")
        data = ints.view(np.uint8).reshape(*ints.shape, 4)[..., : bits // 8].tobytes()
        tag = 1
    else:
        bits = int(encoding[5:])
        data, tag = samples.astype(f"<f{bits // 8}").tobytes(), 3
    channels = samples.shape[1]
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float64)


ENCODINGS = ["pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_mono_wav_reads_as_openai_whisper_reads_it(tmp_path, encoding):
    """Every encoding, sample for sample what openai-whisper's load_audio (ffmpeg to s16le) gives:
    wider PCM cut to 16 bits, floats rounded to the 16-bit grid and clipped."""
    import whisper

    rng = np.random.default_rng(ENCODINGS.index(encoding))
    signal = np.clip(tone(16000) + 0.05 * rng.standard_normal(8000), -1, 1)
    if encoding.startswith("float"):
        signal[::97] *= 3.0  # out of range: clipped
        signal[1000:1003] = [np.nan, np.inf, -np.inf]  # ffmpeg's own mapping (not in the scalar tail)
        signal[2000] = 1e6
    write_wav(tmp_path / "x.wav", signal[:, None], 16000, encoding)
    audio = load_audio(tmp_path / "x.wav")
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, whisper.load_audio(str(tmp_path / "x.wav")))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_stereo_wav_decodes_to_the_signal(tmp_path, encoding):
    signal = tone(16000)
    write_wav(tmp_path / "x.wav", np.stack([signal, signal], axis=1), 16000, encoding)
    audio = load_audio(tmp_path / "x.wav")
    assert audio.dtype == np.float32 and audio.shape == signal.shape
    assert np.abs(audio - signal).max() <= (1 / 100 if encoding == "pcm8" else 1 / 32768)


def test_channels_are_averaged(tmp_path):
    signal = tone(16000)
    write_wav(tmp_path / "x.wav", np.stack([signal, np.zeros_like(signal), -signal * 0.5], axis=1), 16000, "float32")
    np.testing.assert_allclose(load_audio(tmp_path / "x.wav"), signal * 0.5 / 3, atol=1 / 32768)  # each on the 16-bit grid


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_preserves_a_tone(rate):
    """A 440 Hz tone at `rate` resampled to 16 kHz is the 440 Hz tone sampled at 16 kHz."""
    out = resample(tone(rate, 1.0).astype(np.float32), rate, 16000)
    expected = tone(16000, 1.0)
    assert abs(len(out) - len(expected)) <= 1
    n = min(len(out), len(expected))
    interior = slice(200, n - 200)  # the edges see the zero padding
    assert np.abs(out[interior] - expected[interior]).max() < 2e-3


def test_resampling_removes_content_above_the_new_nyquist():
    alias = resample(tone(44100, 1.0, freq=12000.0).astype(np.float32), 44100, 16000)
    assert np.abs(alias[200:-200]).max() < 5e-3


def test_8k_clip_matches_ffmpeg_closely():
    """Our resampler against ffmpeg's (what openai-whisper's load_audio uses) on a real recording."""
    src = DEV / "long_osr_us_000_0034_8k.wav"
    # The dev copy is already 16 kHz; make an 8 kHz file with ffmpeg, then resample it back both ways.
    # (Resamplers differ in filter design, so the bar is a high SNR, not equality.)
    down = subprocess.run(["ffmpeg", "-nostdin", "-i", str(src), "-f", "s16le", "-ar", "8000", "-ac", "1", "-"],
                          capture_output=True, check=True).stdout
    x8 = np.frombuffer(down, np.int16).astype(np.float32) / 32768.0
    ours = resample(x8, 8000, 16000)
    up = subprocess.run(["ffmpeg", "-nostdin", "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "-", "-f", "s16le",
                         "-ar", "16000", "-ac", "1", "-"], input=down, capture_output=True, check=True).stdout
    theirs = np.frombuffer(up, np.int16).astype(np.float32) / 32768.0
    n = min(len(ours), len(theirs))
    noise = np.sum((ours[:n] - theirs[:n]) ** 2)
    snr = 10 * np.log10(np.sum(theirs[:n] ** 2) / noise)
    assert snr > 30, snr


def test_flac_without_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no ffmpeg
    with pytest.raises(AudioError, match="not a WAV file, and ffmpeg .* is not on PATH"):
        load_audio(DEV / "jfk.flac")


def test_wav_needs_no_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert len(load_audio(DEV / "jfk_inaugural.wav")) == 176000


def test_flac_through_ffmpeg_equals_openai_whisper():
    import whisper

    np.testing.assert_array_equal(load_audio(DEV / "jfk.flac"), whisper.load_audio(str(DEV / "jfk.flac")))


def test_truncated_wav_header_is_an_error(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00")
    with pytest.raises(AudioError, match="valid fmt and data"):
        load_audio(bad)


@pytest.mark.parametrize("lengths", [[176000], [480000, 90], [0, 100, 479999]])
def test_front_end_input_is_the_reflect_padded_window(lengths):
    """The device front end's input, written in one pass, equals np.pad(reflect) of each window
    zero-padded to 30 s, as torch.stft(center=True) of pad_or_trim(audio) sees it; rows past the
    windows are silence, whatever the buffer held before."""
    from mxwr.constants import N_FFT, N_SAMPLES
    from mxwr.model import reflect_padded

    rng = np.random.default_rng(len(lengths))
    windows = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    out = rng.standard_normal((len(lengths) + 1, N_SAMPLES + N_FFT)).astype(np.float32)
    reflect_padded(windows, out)
    for row, window in enumerate(windows):
        whole = np.zeros(N_SAMPLES, np.float32)
        whole[: len(window)] = window
        assert np.array_equal(out[row], np.pad(whole, N_FFT // 2, mode="reflect"))
    assert not out[-1].any()
