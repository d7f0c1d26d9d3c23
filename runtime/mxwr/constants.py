"""The audio front end's constants, as openai-whisper's `audio.py` defines them: each derived from
the ones before it, so a change of one cannot leave another behind."""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz
N_FFT = 400  # STFT window, samples
HOP_LENGTH = 160  # STFT hop, samples
CHUNK_LENGTH = 30  # seconds of audio in one window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # mel frames in one window
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's second convolution has stride 2
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # mel frames (10 ms each)
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # audio tokens (20 ms each)

# Word timestamps merge these marks into the next word (prepended) or the previous one (appended),
# and the hallucination heuristics skip them, as openai-whisper does.
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS
