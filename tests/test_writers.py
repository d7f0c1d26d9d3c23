"""mxwr.writers writes the same bytes as openai-whisper's writers, for every format and option mix."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from whisper.utils import format_timestamp as ref_format_timestamp
from whisper.utils import get_writer as ref_get_writer

from mxwr.errors import MxwError
from mxwr.writers import FORMATS, format_timestamp, get_writer

ROOT = Path(__file__).resolve().parent.parent

WORDS = ("Ask not what your country can do for you — ask what you can do for your country. "
         "Ich möchte Käse essen, s'il vous plaît; 日本語のテキスト 👍 and --> arrows\tand tabs. "
         "Supercalifragilisticexpialidocious-and-even-longer-hyphenated-words-that-never-fit.").split(" ")


def _segment(i: int, start: float, end: float, words: list[dict] | None, text: str | None = None) -> dict:
    seg = {"id": i, "seek": int(start * 100), "start": start, "end": end,
           "text": text if text is not None else "".join(w["word"] for w in words or []),
           "tokens": [50364, 1000 + i, 50414], "temperature": 0.0, "avg_logprob": -0.25,
           "compression_ratio": 1.5, "no_speech_prob": 0.01}
    if words is not None:
        seg["words"] = words
    return seg


def _result(segments: list[dict], language: str = "en") -> dict:
    return {"text": "".join(s["text"] for s in segments), "segments": segments, "language": language}


def random_result(seed: int, n_segments: int, t0: float = 0.0, with_words: bool = True) -> dict:
    """Segments of random word timings: gaps, > 3 s pauses, overlaps, times at millisecond ties."""
    rng = np.random.default_rng(seed)
    t, segments = t0, []
    for i in range(n_segments):
        words = []
        for k in range(int(rng.integers(1, 25))):
            t += float(rng.choice([0.0, 0.0005, 0.0015, 0.12, 0.5, 3.5]))
            dur = float(rng.choice([0.0, 0.0005, 0.2, 0.41, 1.0]))
            token = str(rng.choice(WORDS))
            words.append({"word": token if k == 0 and i == 0 else " " + token,
                          "start": round(t, 4), "end": round(t + dur, 4),
                          "probability": float(rng.random())})
            t += dur - float(rng.choice([0.0, 0.0, 0.1]))  # now and then overlap the next word
        segments.append(_segment(i, words[0]["start"], words[-1]["end"], words))
        t += float(rng.choice([0.0, 0.3, 4.0]))
    result = _result(segments)
    if not with_words:
        for seg in segments:
            del seg["words"]
    return result


def edge_result() -> dict:
    """Hand-made edge cases: hour boundaries, .0005 rounding, a segment without words, '-->'."""
    w = lambda word, s, e: {"word": word, "start": s, "end": e, "probability": 0.9}  # noqa: E731
    return _result([
        _segment(0, 0.0005, 0.0015, [w(" Zero", 0.0005, 0.0015), w(" point", 0.0015, 0.0025)]),
        _segment(1, 59.9995, 60.0005, [w(" minute", 59.9995, 60.0005)]),
        _segment(2, 60.0, 61.0, []),
        _segment(3, 100.0, 107.0, [w(" three", 100.0, 100.5), w(" seconds", 103.0, 103.5),
                                   w(" later", 106.5, 107.0)]),  # pauses of exactly 3 s, then 3.5 s
        _segment(4, 3599.9995, 3600.0005, [w("hour", 3599.9995, 3600.0005), w(" --> ", 3600.0005, 3600.5)]),
        _segment(5, 3600.5, 7325.4995, [w("  spaced  ", 3600.5, 3700.0), w("", 3700.0, 3700.0),
                                        w(" 终", 7325.0, 7325.4995)]),
    ])


RESULTS = {
    "words": random_result(1, 12),
    "words_near_hour": random_result(2, 8, t0=3595.0),
    "words_long": random_result(3, 3),
    "edge": edge_result(),
    "no_words": random_result(4, 10, t0=3590.0, with_words=False),
    "no_words_edge": _result([_segment(0, 0.0005, 3599.9995, None, " Tab\there --> there ünïcödé "),
                              _segment(1, 3600.0, 3600.0, None, "")]),
    "empty_words_first": _result([_segment(0, 0.0, 1.0, [], " nothing timed"),
                                  *random_result(5, 3, t0=2.0)["segments"]]),
    "no_segments": _result([]),
}

OPTION_SETS = [None, {}] + [
    {"highlight_words": hl, "max_line_width": width, "max_line_count": count, "max_words_per_line": mwpl}
    for hl, width, count, mwpl in itertools.product((False, True), (None, 0, 12, 42), (None, 0, 2), (None, 3))
]


def write_both(tmp_path: Path, fmt: str, result: dict, audio: str, options: dict | None, **kwargs):
    ours, ref = tmp_path / "ours", tmp_path / "ref"
    ours.mkdir(parents=True, exist_ok=True)
    ref.mkdir(parents=True, exist_ok=True)
    get_writer(fmt, ours)(result, audio, options, **kwargs)
    ref_get_writer(fmt, str(ref))(result, audio, options, **kwargs)
    return ours, ref


def assert_same_files(ours: Path, ref: Path) -> None:
    names = sorted(p.name for p in ref.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        assert (ours / name).read_bytes() == (ref / name).read_bytes(), name


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: repr(o))
@pytest.mark.parametrize("name", RESULTS)
def test_every_format_matches_openai_whisper(tmp_path, name, options):
    for fmt in FORMATS:
        ours, ref = write_both(tmp_path / fmt, fmt, RESULTS[name], "/some/dir/clip.wav", options)
        assert_same_files(ours, ref)


def test_subtitles_actually_vary_with_options(tmp_path):
    """Guards the comparison above against options silently having no effect on either side."""
    texts = set()
    for i, options in enumerate(OPTION_SETS):
        ours, _ = write_both(tmp_path / str(i), "srt", RESULTS["words"], "a.wav", options)
        texts.add((ours / "a.srt").read_text(encoding="utf-8"))
    assert len(texts) > 10
    assert any("<u>" in t for t in texts)
    assert any(len(cue.splitlines()) > 3 for t in texts for cue in t.split("\n\n")), "no multi-line cue"


@pytest.mark.parametrize("kwargs", [{"highlight_words": True}, {"max_line_width": 20, "max_line_count": 1},
                                    {"max_words_per_line": 2}])
def test_keyword_options_override_options_dict(tmp_path, kwargs):
    options = {"highlight_words": False, "max_line_width": 42, "max_line_count": 3, "max_words_per_line": 5}
    for fmt in ("vtt", "srt"):
        ours, ref = write_both(tmp_path / fmt, fmt, RESULTS["words"], "k.wav", options, **kwargs)
        assert_same_files(ours, ref)


@pytest.mark.parametrize("audio", ["clip.wav", "/x/y/archive.tar.gz", "noext", "dotted.", ".hidden",
                                   Path("/x/ünï code.flac")])
def test_all_writes_the_five_files(tmp_path, audio):
    options = {"max_line_width": 10, "max_line_count": 2}
    ours, ref = write_both(tmp_path, "all", RESULTS["edge"], audio, options)
    assert len(list(ours.iterdir())) == 5
    assert {Path(p.name).suffix for p in ours.iterdir()} == {".txt", ".vtt", ".srt", ".tsv", ".json"}
    assert_same_files(ours, ref)


def test_format_timestamp_matches_openai_whisper():
    rng = np.random.default_rng(0)
    values = [0.0, 0.0005, 0.0015, 0.0025, 1.0005, 59.9995, 59.9994, 3599.9995, 3600.0, 3600.0005,
              35999.999, 360000.0, 0.1 + 0.2, *map(float, rng.uniform(0, 8000, 500)),
              *(round(float(x), 4) for x in rng.uniform(0, 4000, 500))]
    for v in values:
        for hours, marker in itertools.product((False, True), (".", ",")):
            assert format_timestamp(v, hours, marker) == ref_format_timestamp(v, hours, marker), v
    with pytest.raises(ValueError):
        format_timestamp(-0.001)


def test_unknown_format_is_an_mxw_error(tmp_path):
    with pytest.raises(MxwError, match="unknown output format"):
        get_writer("docx", tmp_path)


def test_writers_import_without_torch():
    code = ("import sys; import mxwr.writers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'whisper')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(ROOT / "runtime")})
    assert proc.stdout.strip() == "[]"
