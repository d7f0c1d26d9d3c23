"""Transcript writers (txt, vtt, srt, tsv, json, or "all" five), byte-identical to openai-whisper's.

`get_writer(fmt, output_dir)(result, audio_path, options)` writes `<output_dir>/<audio stem>.<fmt>`
in UTF-8. `options` may hold highlight_words, max_line_width, max_line_count and
max_words_per_line, with openai-whisper's meanings; they shape vtt/srt only, and only when the
segments carry word timings (otherwise there is one cue per segment). The CLI-level warnings
openai-whisper prints for odd combinations are the caller's business; here they just combine as
they do in openai-whisper's writers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MxwError

FORMATS = ("txt", "vtt", "srt", "tsv", "json")

Writer = Callable[..., None]
Cue = tuple[str, str, str]  # (start, end, text), the timestamps already formatted


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """[HH:]MM:SS.mmm; the hours appear when asked for or when non-zero."""
    if seconds < 0:
        raise ValueError(f"non-negative timestamp expected, got {seconds}")
    # Python's round() (half to even) like openai-whisper: 0.0005 s is 0 ms, 0.0015 s is 2 ms.
    ms = int(round(seconds * 1000.0))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


@dataclass(frozen=True)
class _Layout:
    max_line_width: int
    max_line_count: int | None
    max_words_per_line: int
    preserve_segments: bool  # every segment starts a new cue
    highlight_words: bool


def _layout(options: dict, overrides: dict) -> _Layout:
    # A keyword argument wins unless falsy, then the options dict (openai-whisper's `a or b`).
    def pick(name: str) -> Any:
        return overrides.get(name) or options.get(name)

    width, count = pick("max_line_width"), pick("max_line_count")
    return _Layout(
        max_line_width=width or 1000,
        max_line_count=count,
        max_words_per_line=pick("max_words_per_line") or 1000,
        # Cues may span segments only when both limits are set; a 0 counts as set here.
        preserve_segments=width is None or count is None,
        highlight_words=bool(pick("highlight_words")),
    )


def _word_groups(segments: list[dict], lay: _Layout) -> Iterator[list[dict]]:
    """Word timings grouped into cues; each word's text carries its cue's line breaks."""
    prev_start = 0.0  # irrelevant: the first word opens a cue whatever the "pause" before it
    cue: list[dict] = []
    line_len, line_count = 0, 1
    for segment in segments:
        words = segment.get("words", [])
        for chunk_at in range(0, len(words), lay.max_words_per_line):
            for i, word in enumerate(words[chunk_at:chunk_at + lay.max_words_per_line]):
                text = word["word"]
                # A pause is measured from the previous word's start, as openai-whisper does.
                long_pause = not lay.preserve_segments and word["start"] - prev_start > 3.0
                seg_break = lay.preserve_segments and i == 0 and bool(cue)
                fits = line_len + len(text) <= lay.max_line_width
                if line_len > 0 and fits and not long_pause and not seg_break:
                    line_len += len(text)
                else:
                    text = text.strip()
                    full = lay.max_line_count is not None and (long_pause or line_count >= lay.max_line_count)
                    if seg_break or (cue and full):
                        yield cue
                        cue, line_count = [], 1
                    elif line_len > 0:
                        line_count += 1
                        text = "\n" + text
                    line_len = len(text.strip())
                cue.append({**word, "word": text})
                prev_start = word["start"]
    if cue:
        yield cue


# The same pattern as openai-whisper, so odd words (empty, trailing newline) underline alike.
_UNDERLINE = re.compile(r"^(\s*)(.*)$")


def _cues(result: dict, lay: _Layout, stamp: Callable[[float], str]) -> Iterator[Cue]:
    segments = result["segments"]
    if not segments or "words" not in segments[0]:
        for seg in segments:
            yield stamp(seg["start"]), stamp(seg["end"]), seg["text"].strip().replace("-->", "->")
        return
    for group in _word_groups(segments, lay):
        words = [w["word"] for w in group]
        text = "".join(words)
        start, end = stamp(group[0]["start"]), stamp(group[-1]["end"])
        if not lay.highlight_words:
            yield start, end, text
            continue
        shown_until = start
        for i, w in enumerate(group):
            w_start, w_end = stamp(w["start"]), stamp(w["end"])
            # Compared as formatted strings: a gap (or overlap) shows the plain cue in between.
            if w_start != shown_until:
                yield shown_until, w_start, text
            marked = _UNDERLINE.sub(r"\1<u>\2</u>", words[i])
            yield w_start, w_end, "".join(words[:i]) + marked + "".join(words[i + 1:])
            shown_until = w_end


def _txt(result: dict, lay: _Layout) -> str:
    return "".join(seg["text"].strip() + "\n" for seg in result["segments"])


def _vtt(result: dict, lay: _Layout) -> str:
    cues = _cues(result, lay, partial(format_timestamp, always_include_hours=False, decimal_marker="."))
    return "WEBVTT\n\n" + "".join(f"{a} --> {b}\n{text}\n\n" for a, b, text in cues)


def _srt(result: dict, lay: _Layout) -> str:
    cues = _cues(result, lay, partial(format_timestamp, always_include_hours=True, decimal_marker=","))
    return "".join(f"{n}\n{a} --> {b}\n{text}\n\n" for n, (a, b, text) in enumerate(cues, start=1))


def _tsv(result: dict, lay: _Layout) -> str:
    # Integer milliseconds (round half to even) so no locale can turn the decimal point into a comma.
    rows = ["start\tend\ttext\n"]
    for seg in result["segments"]:
        text = seg["text"].strip().replace("\t", " ")
        rows.append(f"{round(1000 * seg['start'])!s}\t{round(1000 * seg['end'])!s}\t{text}\n")
    return "".join(rows)


def _json_default(obj: Any) -> Any:
    # Only reached for what plain json can't encode (numpy values from our decoder).
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json(result: dict, lay: _Layout) -> str:
    return json.dumps(result, default=_json_default)


_RENDER: dict[str, Callable[[dict, _Layout], str]] = {
    "txt": _txt, "vtt": _vtt, "srt": _srt, "tsv": _tsv, "json": _json,
}


def render(output_format: str, result: dict, options: dict | None = None) -> str:
    """One format's text, as `get_writer` would write it (for printing to stdout)."""
    if output_format not in _RENDER:
        raise MxwError(f"unknown output format {output_format!r}; expected one of {', '.join(FORMATS)}")
    return _RENDER[output_format](result, _layout(options or {}, {}))


def get_writer(output_format: str, output_dir: str | Path) -> Writer:
    """A function (result, audio_path, options=None) writing the transcript in `output_format`.

    The keyword arguments highlight_words, max_line_width, max_line_count and max_words_per_line
    are accepted too and take precedence over `options`, as in openai-whisper.
    """
    if output_format == "all":
        formats = FORMATS
    elif output_format in FORMATS:
        formats = (output_format,)
    else:
        raise MxwError(f"unknown output format {output_format!r}; expected one of {', '.join(FORMATS)}, all")

    def write(result: dict, audio_path: str | Path, options: dict | None = None, *,
              highlight_words: bool = False, max_line_width: int | None = None,
              max_line_count: int | None = None, max_words_per_line: int | None = None) -> None:
        overrides = dict(highlight_words=highlight_words, max_line_width=max_line_width,
                         max_line_count=max_line_count, max_words_per_line=max_words_per_line)
        lay = _layout(options or {}, overrides)
        # os.path rather than Path.stem: "name." must lose only its dot, as openai-whisper's does.
        stem = os.path.splitext(os.path.basename(audio_path))[0]
        for fmt in formats:
            text = _RENDER[fmt](result, lay)
            with open(os.path.join(output_dir, f"{stem}.{fmt}"), "w", encoding="utf-8") as f:
                f.write(text)

    return write
