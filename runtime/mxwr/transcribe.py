"""Bundle + audio -> transcript, as openai-whisper's `transcribe()`.

audio (streamed) -> log-mel window at `seek` -> encoder -> decode with temperature fallback ->
segments from timestamp tokens -> seek onwards (to the last complete segment, or past the window)
-> optional word timestamps (align graph + DTW) and hallucination skipping. The rules and their
order are openai-whisper's, so the segments are the same.

`decode_windows` is the other path: independent 30-second windows, batched across the bundle's
batch (many files, or a long file without conditioning on previous text), for throughput.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AudioStream, open_audio, pad_or_trim
from .bundle import BundleReader
from .constants import (APPEND_PUNCTUATIONS, FRAMES_PER_SECOND, HOP_LENGTH, N_FRAMES, N_SAMPLES,
                        N_SAMPLES_PER_TOKEN, PREPEND_PUNCTUATIONS, PUNCTUATION, SAMPLE_RATE)
from .decoding import DecodingOptions, DecodingResult, DecodingTask, detect_language
from .errors import AudioError, MxwError
from .mel import LogMelStream, log_mel_spectrogram
from .model import AudioContext, WhisperModel
from .timing import add_word_timestamps, find_alignment
from .tokens import SpecialTokens


@dataclass(frozen=True)
class TranscribeOptions:
    """openai-whisper's `transcribe()` arguments, with its defaults; `decode_options` are the
    `DecodingOptions` each window is decoded with (its prompt and temperature set per window)."""

    temperature: float | tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    carry_initial_prompt: bool = False
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS
    append_punctuations: str = APPEND_PUNCTUATIONS
    clip_timestamps: str | list[float] = "0"
    hallucination_silence_threshold: float | None = None
    decode_options: DecodingOptions = field(default_factory=DecodingOptions)


_TEXT_ONLY = DecodingOptions(without_timestamps=True)  # decode_windows' default


class Transcriber:
    def __init__(self, bundle: str | Path, device: str = "auto", mel_on_device: bool | None = None,
                 replay: str = "auto", max_duration: float | None = None,
                 require_signature: str | Path | None = None):
        """`mel_on_device`: in `decode_windows`, compute log-mel with the bundle's front-end graph
        (default: on GPU targets) rather than in numpy. `replay`: see `WhisperModel`.
        `max_duration`: audio longer than this many seconds is refused (AudioError).
        `require_signature`: a public key file; the bundle must be signed by it (and match every
        checksum), checked before any section is used and any graph loaded (`mxwr.signing`)."""
        self.max_duration = max_duration
        self.bundle = BundleReader(bundle)
        if require_signature is not None:
            from .signing import require_signature as check

            try:
                check(self.bundle, require_signature)
            except BaseException:
                self.bundle.close()
                raise
        self.special = SpecialTokens.from_bundle(self.bundle)
        self.model = WhisperModel(self.bundle, device, replay)
        if mel_on_device is None:
            mel_on_device = self.model.target.is_gpu and self.model.has("frontend")
        if mel_on_device and not self.model.has("frontend"):
            raise MxwError(f"{bundle} has no front-end graph to compute log-mel on the device")
        self.mel_on_device = mel_on_device

    # -- openai-whisper's transcribe() -------------------------------------------------------------

    def transcribe(
        self,
        audio: str | Path | np.ndarray | AudioStream,
        *,
        temperature: float | tuple[float, ...] = TranscribeOptions.temperature,
        compression_ratio_threshold: float | None = TranscribeOptions.compression_ratio_threshold,
        logprob_threshold: float | None = TranscribeOptions.logprob_threshold,
        no_speech_threshold: float | None = TranscribeOptions.no_speech_threshold,
        condition_on_previous_text: bool = TranscribeOptions.condition_on_previous_text,
        initial_prompt: str | None = TranscribeOptions.initial_prompt,
        carry_initial_prompt: bool = TranscribeOptions.carry_initial_prompt,
        word_timestamps: bool = TranscribeOptions.word_timestamps,
        prepend_punctuations: str = TranscribeOptions.prepend_punctuations,
        append_punctuations: str = TranscribeOptions.append_punctuations,
        clip_timestamps: str | list[float] = TranscribeOptions.clip_timestamps,
        hallucination_silence_threshold: float | None = TranscribeOptions.hallucination_silence_threshold,
        **decode_options: Any,
    ) -> dict[str, Any]:
        """openai-whisper's `transcribe()` with the same arguments and result; `decode_options`
        are `DecodingOptions` fields (TypeError for any other keyword). The audio is streamed:
        memory stays bounded however long."""
        options = TranscribeOptions(
            temperature=temperature, compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text, initial_prompt=initial_prompt,
            carry_initial_prompt=carry_initial_prompt, word_timestamps=word_timestamps,
            prepend_punctuations=prepend_punctuations, append_punctuations=append_punctuations,
            clip_timestamps=clip_timestamps, hallucination_silence_threshold=hallucination_silence_threshold,
            decode_options=DecodingOptions(**decode_options),
        )
        with _audio_stream(audio, self.max_duration) as stream:
            mel = LogMelStream(stream, self.model.mel_filters, padding=N_SAMPLES)
            return _Transcription(self, mel, options).run()

    def transcribe_windows(self, audio: str | Path | np.ndarray | AudioStream,
                           options: TranscribeOptions) -> Generator[list[dict[str, Any]], None, dict[str, Any]]:
        """`transcribe()` window by window (the same loop): yields each decoded window's segments
        as soon as they are final, and returns the result `transcribe()` gives (as StopIteration's
        value). Closing the generator early stops decoding and closes a file opened here."""
        with _audio_stream(audio, self.max_duration) as stream:
            mel = LogMelStream(stream, self.model.mel_filters, padding=N_SAMPLES)
            return (yield from _Transcription(self, mel, options).windows())

    def encode_window(self, mel: np.ndarray) -> AudioContext:
        """One log-mel window [n_mels, N_FRAMES] -> its AudioContext (batch row 0; other rows silent)."""
        batch = np.zeros((self.model.batch, *mel.shape), dtype=np.float32)
        batch[0] = mel
        return self.model.encode(batch)

    def detect_language(self, audio: str | Path | np.ndarray | AudioStream) -> tuple[str, dict[str, float]]:
        """openai-whisper's `detect_language` on the first 30 seconds."""
        with _audio_stream(audio, self.max_duration) as stream:
            return self.language_of(LogMelStream(stream, self.model.mel_filters, padding=N_SAMPLES))

    def language_of(self, mel: LogMelStream) -> tuple[str, dict[str, float]]:
        """The language of the first window of `mel`, and the probabilities of every language."""
        ctx = self.encode_window(pad_or_trim(mel.window(0), N_FRAMES))
        languages, probs = detect_language(self.model, self.special, ctx)
        return languages[0], probs[0]

    # -- independent windows, batched ---------------------------------------------------------------

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """One window's log-mel, as openai-whisper's `log_mel_spectrogram(pad_or_trim(audio))`."""
        return log_mel_spectrogram(pad_or_trim(audio), self.model.mel_filters)

    def _mels(self, windows: list[np.ndarray]):
        """The batch's log-mels: on the device with the front-end graph (so nothing but audio
        crosses to a GPU), or in numpy. Missing batch rows are silence."""
        b = self.model.batch
        if self.mel_on_device:
            return self.model.log_mel(windows)
        mels = [self.mel(w) for w in windows]
        return np.stack(mels + [np.zeros_like(mels[0])] * (b - len(mels)))

    def decode_files(self, paths: list[str | Path],
                     options: DecodingOptions = _TEXT_ONLY) -> Iterator[dict[str, Any]]:
        """`decode_windows` over the files, each read window by window as its batch comes; every
        file is opened (so checked, and converted when it needs to be) before the first result."""
        with ExitStack() as streams:
            opened = [streams.enter_context(open_audio(p, max_duration=self.max_duration)) for p in paths]
            yield from self.decode_windows(opened, options)

    def decode_windows(self, audios: list[AudioStream | np.ndarray],
                       options: DecodingOptions = _TEXT_ONLY) -> Iterator[dict[str, Any]]:
        """Each audio cut into consecutive 30-second windows, each decoded on its own with
        `options` (openai-whisper's `decode` on each: no seeking, no conditioning); windows of all
        audios share the batch, and are read when it is decoded. Yields one result per audio, in
        order, with a segment per window."""
        streams = [a if isinstance(a, AudioStream) else AudioStream.from_array(a) for a in audios]
        jobs = [(i, s) for i, stream in enumerate(streams) for s in range(0, max(stream.n_samples, 1), N_SAMPLES)]
        task = DecodingTask(self.model, self.special, options)
        b = self.model.batch
        segments: list[list[dict[str, Any]]] = [[] for _ in streams]
        done = 0
        for first in range(0, len(jobs), b):
            group = jobs[first : first + b]
            mels = self._mels([streams[i].read(s, N_SAMPLES) for i, s in group])
            for (i, s), r in zip(group, task.run(self.model.encode(mels))):
                end = min(s + N_SAMPLES, streams[i].n_samples)
                segments[i].append({"id": len(segments[i]), "seek": s // HOP_LENGTH, "start": s / SAMPLE_RATE,
                                    "end": end / SAMPLE_RATE, **asdict(r)})
            finished_upto = group[-1][0] if first + b < len(jobs) else len(streams)
            while done < finished_upto:
                yield _windows_result(segments[done])
                done += 1


@contextmanager
def _audio_stream(audio: str | Path | np.ndarray | AudioStream, max_duration: float | None) -> Iterator[AudioStream]:
    """`audio` as a stream: a caller's stream as it is (the caller closes it), a file opened and
    closed here; none longer than `max_duration` seconds."""
    if not isinstance(audio, (AudioStream, np.ndarray)):
        with open_audio(audio, max_duration=max_duration) as stream:
            yield stream
        return
    stream = audio if isinstance(audio, AudioStream) else AudioStream.from_array(audio)
    if max_duration is not None and stream.n_samples > max_duration * SAMPLE_RATE:
        raise AudioError(f"the audio is longer than max_duration ({max_duration:g} s)")
    yield stream


def _windows_result(segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "text": " ".join(seg["text"] for seg in segments if seg["text"]),
        "segments": segments,
        "language": segments[0]["language"],
    }


class _Transcription:
    """One run of `transcribe()`: the seek loop and its state."""

    def __init__(self, t: Transcriber, mel: LogMelStream, options: TranscribeOptions):
        self.t, self.mel = t, mel
        self.model, self.special = t.model, t.special
        self.options = options
        n_audio_ctx = self.model.dims.n_audio_ctx
        if n_audio_ctx * N_SAMPLES_PER_TOKEN != N_SAMPLES:  # timestamps and word times assume it
            raise MxwError(f"the model's audio context is {n_audio_ctx} frames, not {N_SAMPLES // N_SAMPLES_PER_TOKEN}")

    def run(self) -> dict[str, Any]:
        windows = self.windows()
        while True:
            try:
                next(windows)
            except StopIteration as done:
                return done.value

    def windows(self) -> Generator[list[dict[str, Any]], None, dict[str, Any]]:
        """The seek loop, one decoded window at a time: yields the window's segments once they
        are final (ids, text, word times), and returns transcribe()'s result. `run()` and
        `Transcriber.transcribe_windows()` (what streams) share it, so both give the same."""
        o, special, model = self.options, self.special, self.model
        decode = o.decode_options
        content_frames = self.mel.n_frames - N_FRAMES
        content_duration = float(content_frames * HOP_LENGTH / SAMPLE_RATE)

        if decode.language is None:
            if not special.multilingual:
                decode = replace(decode, language="en")
            else:  # detected on the first 30 seconds, then fixed for every window
                _, probs = self.t.language_of(self.mel)
                decode = replace(decode, language=max(probs, key=probs.get))
        language, task = decode.language, decode.task

        clip = o.clip_timestamps
        if isinstance(clip, str):
            clip = [float(ts) for ts in clip.split(",")] if clip else []
        seek_points = [round(ts * FRAMES_PER_SECOND) for ts in clip] or [0]
        if len(seek_points) % 2 == 1:
            seek_points.append(content_frames)
        seek_clips = list(zip(seek_points[::2], seek_points[1::2]))

        input_stride = N_FRAMES // model.dims.n_audio_ctx  # mel frames per output token
        time_precision = input_stride * HOP_LENGTH / SAMPLE_RATE  # seconds per output token
        all_tokens: list[int] = []
        all_segments: list[dict[str, Any]] = []
        prompt_reset_since = 0
        remaining_prompt_length = model.dims.n_text_ctx // 2 - 1
        initial_prompt_tokens: list[int] = []
        if o.initial_prompt is not None:
            initial_prompt_tokens = special.encode(" " + o.initial_prompt.strip())
            all_tokens.extend(initial_prompt_tokens)
            remaining_prompt_length -= len(initial_prompt_tokens)
        threshold = o.hallucination_silence_threshold

        last_speech_timestamp = 0.0
        clip_idx = 0
        seek = seek_clips[0][0]
        while clip_idx < len(seek_clips):
            seek_clip_start, seek_clip_end = seek_clips[clip_idx]
            seek = max(seek, seek_clip_start)
            if seek >= seek_clip_end:
                clip_idx += 1
                if clip_idx < len(seek_clips):
                    seek = seek_clips[clip_idx][0]
                continue
            time_offset = float(seek * HOP_LENGTH / SAMPLE_RATE)
            window_end_time = float((seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE)
            segment_size = min(N_FRAMES, content_frames - seek, seek_clip_end - seek)
            mel_segment = pad_or_trim(self.mel.window(seek, segment_size), N_FRAMES)
            segment_duration = segment_size * HOP_LENGTH / SAMPLE_RATE

            if o.carry_initial_prompt:
                nignored = max(len(initial_prompt_tokens), prompt_reset_since)
                remaining_prompt = all_tokens[nignored:][-remaining_prompt_length:]
                prompt = tuple(initial_prompt_tokens + remaining_prompt)
            else:
                prompt = tuple(all_tokens[prompt_reset_since:])

            ctx = self.t.encode_window(mel_segment)
            result = self.decode_with_fallback(ctx, replace(decode, prompt=prompt))
            tokens = np.array(result.tokens, dtype=np.int64)

            if o.no_speech_threshold is not None:
                should_skip = result.no_speech_prob > o.no_speech_threshold
                if o.logprob_threshold is not None and result.avg_logprob > o.logprob_threshold:
                    should_skip = False  # confident enough despite the no-speech probability
                if should_skip:
                    seek += segment_size
                    continue

            previous_seek = seek
            current_segments: list[dict[str, Any]] = []

            def new_segment(start: float, end: float, tokens: np.ndarray) -> dict[str, Any]:
                tokens = tokens.tolist()
                return {
                    "seek": previous_seek, "start": start, "end": end,
                    "text": special.vocab.decode([t for t in tokens if t < special.eot]), "tokens": tokens,
                    "temperature": result.temperature, "avg_logprob": result.avg_logprob,
                    "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob,
                }

            is_timestamp = tokens >= special.timestamp_begin
            single_timestamp_ending = is_timestamp[-2:].tolist() == [False, True]
            consecutive = (np.nonzero(is_timestamp[:-1] & is_timestamp[1:])[0] + 1).tolist()
            if consecutive:  # complete segments between pairs of timestamps
                slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
                last_slice = 0
                for current_slice in slices:
                    piece = tokens[last_slice:current_slice]
                    start = (int(piece[0]) - special.timestamp_begin) * time_precision
                    end = (int(piece[-1]) - special.timestamp_begin) * time_precision
                    current_segments.append(new_segment(time_offset + start, time_offset + end, piece))
                    last_slice = current_slice
                if single_timestamp_ending:  # no speech after the last timestamp
                    seek += segment_size
                else:  # the unfinished segment is decoded again from its start
                    seek += (int(tokens[last_slice - 1]) - special.timestamp_begin) * input_stride
            else:
                duration = segment_duration
                timestamps = tokens[is_timestamp]
                if len(timestamps) > 0 and int(timestamps[-1]) != special.timestamp_begin:
                    duration = (int(timestamps[-1]) - special.timestamp_begin) * time_precision
                current_segments.append(new_segment(time_offset, time_offset + duration, tokens))
                seek += segment_size

            if o.word_timestamps:
                self.add_words(current_segments, ctx, segment_size, language, task, last_speech_timestamp)
                if not single_timestamp_ending:
                    last_word_end = _last_word_end(current_segments)
                    if last_word_end is not None and last_word_end > time_offset:
                        seek = round(last_word_end * FRAMES_PER_SECOND)

                if threshold is not None:  # skip silence before possible hallucinations
                    if not single_timestamp_ending:
                        last_word_end = _last_word_end(current_segments)
                        if last_word_end is not None and last_word_end > time_offset:
                            remaining_duration = window_end_time - last_word_end
                            if remaining_duration > threshold:
                                seek = round(last_word_end * FRAMES_PER_SECOND)
                            else:
                                seek = previous_seek + segment_size

                    first_segment = _next_words_segment(current_segments)
                    if first_segment is not None and _is_segment_anomaly(first_segment):
                        gap = first_segment["start"] - time_offset
                        if gap > threshold:
                            seek = previous_seek + round(gap * FRAMES_PER_SECOND)
                            continue

                    hal_last_end = last_speech_timestamp
                    for si, segment in enumerate(current_segments):
                        if not segment["words"]:
                            continue
                        if _is_segment_anomaly(segment):
                            next_segment = _next_words_segment(current_segments[si + 1 :])
                            hal_next_start = (next_segment["words"][0]["start"] if next_segment is not None
                                              else time_offset + segment_duration)
                            silence_before = (segment["start"] - hal_last_end > threshold
                                              or segment["start"] < threshold
                                              or segment["start"] - time_offset < 2.0)
                            silence_after = (hal_next_start - segment["end"] > threshold
                                             or _is_segment_anomaly(next_segment)
                                             or window_end_time - segment["end"] < 2.0)
                            if silence_before and silence_after:
                                seek = round(max(time_offset + 1, segment["start"]) * FRAMES_PER_SECOND)
                                if content_duration - segment["end"] < threshold:
                                    seek = content_frames
                                current_segments[si:] = []
                                break
                        hal_last_end = segment["end"]

                last_word_end = _last_word_end(current_segments)
                if last_word_end is not None:
                    last_speech_timestamp = last_word_end

            for segment in current_segments:  # instantaneous or empty segments keep no text
                if segment["start"] == segment["end"] or segment["text"].strip() == "":
                    segment["text"], segment["tokens"], segment["words"] = "", [], []

            new_segments = [{"id": i, **s} for i, s in enumerate(current_segments, start=len(all_segments))]
            all_segments.extend(new_segments)
            all_tokens.extend(t for s in current_segments for t in s["tokens"])
            if not o.condition_on_previous_text or result.temperature > 0.5:
                prompt_reset_since = len(all_tokens)  # a high-temperature text is no prompt
            yield new_segments

        return {
            "text": special.vocab.decode(all_tokens[len(initial_prompt_tokens):]),
            "segments": all_segments,
            "language": language,
        }

    def decode_with_fallback(self, ctx: AudioContext, decode: DecodingOptions) -> DecodingResult:
        o = self.options
        temperatures = [o.temperature] if isinstance(o.temperature, (int, float)) else list(o.temperature)
        result = None
        for t in temperatures:
            if t > 0:  # beams and patience are for greedy search
                options = replace(decode, temperature=t, beam_size=None, patience=None)
            else:  # best_of is for sampling
                options = replace(decode, temperature=t, best_of=None)
            result = DecodingTask(self.model, self.special, options).run(ctx)[0]

            needs_fallback = False
            if o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold:
                needs_fallback = True  # too repetitive
            if o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold:
                needs_fallback = True  # too improbable
            if (o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold
                    and o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold):
                needs_fallback = False  # silence
            if not needs_fallback:
                break
        return result

    def add_words(self, segments: list[dict[str, Any]], ctx: AudioContext, num_frames: int, language: str,
                  task: str, last_speech_timestamp: float) -> None:
        special, model = self.special, self.model
        sot_sequence = special.sot_sequence(language, task)

        def alignment(text_tokens: list[int]):
            sequence = [*sot_sequence, special.no_timestamps, *text_tokens, special.eot]
            scores, probs = model.align(ctx, sequence)
            token_probs = probs[len(sot_sequence): len(sot_sequence) + len(text_tokens)]
            return find_alignment(scores, token_probs, text_tokens, len(sot_sequence), num_frames, special.vocab,
                                  language, eot=special.eot)

        add_word_timestamps(segments, alignment, eot=special.eot, last_speech_timestamp=last_speech_timestamp,
                            prepend_punctuations=self.options.prepend_punctuations,
                            append_punctuations=self.options.append_punctuations)


def _last_word_end(segments: list[dict[str, Any]]) -> float | None:
    return next((w["end"] for s in reversed(segments) for w in reversed(s["words"])),
                segments[-1]["end"] if segments else None)


def _word_anomaly_score(word: dict[str, Any]) -> float:
    probability = word.get("probability", 0.0)
    duration = word["end"] - word["start"]
    score = 0.0
    if probability < 0.15:
        score += 1.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_segment_anomaly(segment: dict[str, Any] | None) -> bool:
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in PUNCTUATION][:8]
    score = sum(_word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_words_segment(segments: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((s for s in segments if s["words"]), None)
