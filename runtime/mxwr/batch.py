"""Batch jobs for `mxwr run`: many files and folders in one process, the bundle loaded once.

Inputs: each file given is taken as it is; each folder given is walked (subfolders too, not
through symbolic links to folders, hidden entries left out) for the `AUDIO_EXTENSIONS`, sorted by
path, so the same folder always gives the same job in the same order.

Outputs (`--output_dir`): openai-whisper's names (the audio's basename without its extension); a
file found in a subfolder of a folder given is written to the same subfolder under the output
folder (`in/a/x.wav` -> `out/a/x.txt`), so two recordings of one name in different subfolders do
not collide. Two inputs that would still write the same outputs (`x.wav` and `x.mp3` side by
side, or two files of one name given from different folders): the first in the job's order is
transcribed, the other fails (reported, as any failure) and nothing is overwritten. Each file's
outputs are written to a temporary folder and then moved into place, so an output that exists is
a complete one, which `--skip_existing` relies on to skip a file whose outputs all exist.

A batch (more than one input, or any folder) isolates failures: a file that fails is one
`mxwr: error: PATH: ...` line and the job goes on; the exit status is 1 if any file failed (2 if
any failed for a bug of ours), and the job ends with a summary on stderr. On a terminal, with
`--verbose` not given, a progress line on stderr shows the files and audio done. One file alone
behaves as it always has: its error is the command's error.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import click

from .audio import AudioStream, open_audio
from .constants import SAMPLE_RATE
from .errors import MxwError
from .writers import FORMATS, format_timestamp, get_writer, render

# What a folder walk picks: the audio formats ffmpeg reads that people record in, and the usual
# video containers (their audio track is transcribed). A file given by name is taken whatever
# its extension.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".aif", ".aiff", ".aifc",
    ".amr", ".caf", ".mka", ".webm", ".mp4", ".m4v", ".mkv", ".mov",
})

# --independent_windows opens this many files at a time (each one's windows then share batches):
# enough to fill any bundle's batch, few enough to bound open files and converted temporaries.
WINDOW_FILES = 64


@dataclass
class Item:
    """One audio file of the job."""

    path: str
    subdir: str = ""  # where its outputs go, under --output_dir
    error: str | None = None  # known before it runs: its outputs' names are another input's


def collect(inputs: Sequence[str], warn: Callable[[str], None]) -> list[Item]:
    """The job's files, in order: each input as given, folders walked (see the module's doc).
    Raises MxwError when the folders given hold no audio at all and no file is given."""
    items: list[Item] = []
    empty: list[str] = []
    for given in inputs:
        if not os.path.isdir(given):
            items.append(Item(given))
            continue
        found = list(walk(given, warn))
        if not found:
            empty.append(given)
        items.extend(found)
    if not items:
        raise MxwError(f"no audio files in {', '.join(inputs)} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
    for folder in empty:
        warn(f"no audio files in {folder}")
    return items


def walk(folder: str, warn: Callable[[str], None]) -> Iterator[Item]:
    """The audio files under `folder`, sorted by their path below it (component by component)."""
    found: list[tuple[tuple[str, ...], Item]] = []

    def unreadable(e: OSError) -> None:  # os.walk would skip an unreadable subfolder silently
        warn(f"cannot read {e.filename}: {e.strerror}")

    for top, dirs, files in os.walk(folder, onerror=unreadable):  # followlinks=False: no cycles
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(top, folder)
        subdir = "" if rel == os.curdir else rel
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in AUDIO_EXTENSIONS:
                continue  # hidden: e.g. macOS's "._x.wav" resource forks, which are no audio
            path = os.path.join(top, name)
            if os.path.isfile(path) or os.path.islink(path):  # a dangling link fails as a missing file
                found.append(((*subdir.split(os.sep), name) if subdir else (name,), Item(path, subdir)))
    found.sort(key=lambda entry: entry[0])
    return (item for _, item in found)


def stem(path: str) -> str:
    # os.path rather than Path.stem, as the writers do: "name." loses only its dot.
    return os.path.splitext(os.path.basename(path))[0]


def output_files(item: Item, output_dir: str, output_format: str) -> list[str]:
    formats = FORMATS if output_format == "all" else (output_format,)
    return [os.path.join(output_dir, item.subdir, f"{stem(item.path)}.{fmt}") for fmt in formats]


def claim_outputs(items: list[Item]) -> list[Item]:
    """Items whose outputs no earlier item writes; the same file listed twice runs once, and a
    file whose output names are taken fails (Item.error) rather than overwrite the other's."""
    owners: dict[tuple[str, str], Item] = {}
    seen: set[str] = set()
    kept: list[Item] = []
    for item in items:
        real = os.path.realpath(item.path)
        if real in seen:
            continue
        seen.add(real)
        key = (item.subdir, stem(item.path))
        if key in owners:
            item.error = (f"{item.path}: not transcribed: its outputs would overwrite those of "
                          f"{owners[key].path} (the same name); transcribe it on its own")
        else:
            owners[key] = item
        kept.append(item)
    return kept


class _Progress:
    """One line on stderr, redrawn in place: files done of the total, audio done, time elapsed
    and the file being transcribed. Anything else printed meanwhile clears it first."""

    def __init__(self, total: int, stream: TextIO | None):
        self.total, self.stream = total, stream
        self.done = 0
        self.audio = 0.0
        self.started = time.monotonic()
        self.current = ""

    def draw(self) -> None:
        if self.stream is None:
            return
        width = shutil.get_terminal_size().columns
        filled = round(20 * self.done / self.total)
        line = (f"[{'#' * filled}{'-' * (20 - filled)}] {self.done}/{self.total} files, "
                f"{_clock(self.audio)} of audio, {_clock(time.monotonic() - self.started)} {self.current}")
        self.stream.write("\r\x1b[K" + line[: max(width - 1, 10)])
        self.stream.flush()

    def clear(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def step(self, seconds: float = 0.0) -> None:
        self.done += 1
        self.audio += seconds
        self.current = ""
        self.draw()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Job:
    """`mxwr run`'s files: collected when made (before the bundle is loaded, so a folder with
    no audio fails fast), transcribed by `run`."""

    def __init__(self, inputs: Sequence[str], *, output_dir: str | None, output_format: str | None,
                 writer_options: dict, verbose: bool | None, skip_existing: bool,
                 report: Callable[[str], None]):
        """`report(message)`: prints one error line (called inside the `except` block, so that
        --debug can print the traceback); `verbose`: True prints each file's segments, False
        nothing but errors and the summary, None a progress line when stderr is a terminal."""
        self.started = time.monotonic()
        self.batch = len(inputs) > 1 or any(os.path.isdir(p) for p in inputs)
        self.output_dir = output_dir
        self.output_format = output_format or ("all" if output_dir is not None else "txt")
        self.writer_options = writer_options
        self.verbose = verbose
        self.skip_existing = skip_existing
        self._report = report
        self.items = collect(inputs, self.warn)
        if output_dir is not None:
            self.items = claim_outputs(self.items)
        self.transcribed = self.skipped = self.failed = 0
        self.internal = False  # a file failed for a bug of ours
        self.audio = 0.0  # seconds transcribed
        terminal = self.batch and verbose is None and sys.stderr.isatty()
        self.progress = _Progress(len(self.items), sys.stderr if terminal else None)

    # -- printing, around the progress line -------------------------------------------------------

    def warn(self, message: str) -> None:
        self._say(lambda: click.echo(f"mxwr: warning: {message}", err=True))

    def _say(self, show: Callable[[], None]) -> None:
        if getattr(self, "progress", None) is None:
            show()
            return
        self.progress.clear()
        show()
        self.progress.draw()

    def _fail(self, item: Item, message: str, internal: bool = False) -> None:
        """One line naming the file (inside the caller's except block, for --debug's traceback)."""
        self.failed += 1
        self.internal = self.internal or internal
        line = message if item.path in message else f"{item.path}: {message}"
        self._say(lambda: self._report(line))
        self.progress.step()

    # -- the job -------------------------------------------------------------------------------------

    def run(self, transcriber, args: dict, notes: Sequence[str] = ()) -> int:
        """Transcribes every file with transcribe()'s `args` (or, with args["independent_windows"],
        decode() on each window); prints `notes` after the output and, for a batch, the summary.
        Returns the exit status: 0, 1 (some file failed) or 2 (some file met a bug of ours)."""
        if self.output_dir is not None:
            os.makedirs(self.output_dir, exist_ok=True)
        self.progress.draw()
        try:
            todo = [item for item in self.items if self._should_run(item)]
            if args.pop("independent_windows"):
                self._run_windows(transcriber, todo, args)
            else:
                for item in todo:
                    self._attempt(item, lambda item=item: self._transcribe(transcriber, item, args))
        finally:
            self.progress.clear()
        for note in notes:
            click.echo(note, err=True)
        if self.batch:
            click.echo(self.summary(), err=True)
        return 2 if self.internal else 1 if self.failed else 0

    def _should_run(self, item: Item) -> bool:
        if item.error is not None:  # only in a batch: one input has nothing to collide with
            def collided(error: str = item.error) -> None:
                raise MxwError(error)  # reported as any failure (and --debug's traceback is this)

            self._attempt(item, collided)
            return False
        if self.skip_existing and all(os.path.exists(p) for p in output_files(item, self.output_dir, self.output_format)):
            self.skipped += 1
            if not self.batch:
                click.echo(f"mxwr: skipped {item.path}: its outputs exist in {self.output_dir}", err=True)
            self.progress.step()
            return False
        return True

    def _attempt(self, item: Item, work: Callable[[], None]) -> bool:
        """work() for one file; in a batch, its failure is reported (False) and the job goes on."""
        if not self.batch:
            work()
            return True
        try:
            work()
            return True
        except BrokenPipeError:  # stdout's reader is gone: the job has nowhere to go on to
            raise
        except (MxwError, OSError) as e:  # bad input, or an output that cannot be written
            self._fail(item, str(e) if isinstance(e, MxwError) else f"{type(e).__name__}: {e}")
        except MemoryError:
            self._fail(item, "out of memory")
        except Exception as e:  # a bug of ours: this file fails, the others may well not
            self._fail(item, f"internal error ({type(e).__name__}: {e}); please report it, with the "
                             f"traceback that --debug prints", internal=True)
        return False

    def _transcribe(self, transcriber, item: Item, args: dict) -> None:
        self.progress.current = item.path
        self.progress.draw()
        with open_audio(item.path, max_duration=transcriber.max_duration) as stream:
            seconds = stream.n_samples / SAMPLE_RATE
            result = transcriber.transcribe(stream, **args)
        self._done(item, result, seconds)

    def _run_windows(self, transcriber, todo: list[Item], args: dict) -> None:
        """openai-whisper's decode() on each 30-second window (no seeking, no conditioning, the
        first temperature only), the windows of up to WINDOW_FILES files batched together on a
        bundle built with --batch N."""
        from .decoding import DecodingOptions

        t = args["temperature"][0]
        fields = ["task", "language", "length_penalty", "suppress_tokens", "seed", "without_timestamps"]
        fields += ["beam_size", "patience"] if t == 0 else ["best_of"]  # as transcribe()'s fallback does
        options = DecodingOptions(temperature=t, **{k: args[k] for k in fields})
        for first in range(0, len(todo), WINDOW_FILES):
            with ExitStack() as streams:
                opened: list[tuple[Item, AudioStream]] = []
                for item in todo[first : first + WINDOW_FILES]:
                    def open_one(item: Item = item, opened: list = opened) -> None:
                        stream = streams.enter_context(open_audio(item.path, max_duration=transcriber.max_duration))
                        opened.append((item, stream))

                    self._attempt(item, open_one)
                self._decode_windows(transcriber, opened, options)

    def _decode_windows(self, transcriber, pending: list[tuple[Item, AudioStream]], options) -> None:
        while pending:
            results = transcriber.decode_windows([s for _, s in pending], options)
            for i, (item, stream) in enumerate(pending):
                self.progress.current = item.path
                self.progress.draw()
                got: list[dict[str, Any]] = []
                # A file's result comes once the batch holding its last window is decoded; if that
                # fails, this file fails and the rest are decoded afresh.
                if not self._attempt(item, lambda got=got, results=results: got.append(next(results))):
                    pending = pending[i + 1:]
                    break
                seconds = stream.n_samples / SAMPLE_RATE
                self._attempt(item, lambda item=item, got=got, seconds=seconds: self._done(item, got[0], seconds))
            else:
                pending = []

    def _done(self, item: Item, result: dict[str, Any], seconds: float) -> None:
        """Prints or writes one file's result, then counts it."""
        if self.verbose:
            def segments() -> None:
                for seg in result["segments"]:
                    click.echo(f"[{format_timestamp(seg['start'])} --> {format_timestamp(seg['end'])}] {seg['text']}",
                               err=True)

            self._say(segments)
        if self.output_dir is not None:
            self._write(item, result)
        elif self.output_format == "json":
            self._say(lambda: click.echo(render("json", result)))
        elif self.output_format == "txt":
            self._say(lambda: click.echo(result["text"].strip()))
        else:
            self._say(lambda: click.echo(render(self.output_format, result, self.writer_options), nl=False))
        self.transcribed += 1
        self.audio += seconds
        self.progress.step(seconds)

    def _write(self, item: Item, result: dict[str, Any]) -> None:
        """The outputs written beside their final place, then moved there: an output that exists
        is whole, even after a job killed mid-write (what --skip_existing trusts)."""
        target = os.path.join(self.output_dir, item.subdir)
        os.makedirs(target, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".mxwr-", dir=target)
        try:
            get_writer(self.output_format, staging)(result, item.path, self.writer_options)
            for name in sorted(os.listdir(staging)):
                os.replace(os.path.join(staging, name), os.path.join(target, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def summary(self) -> str:
        return summary_line(len(self.items), self.transcribed, self.skipped, self.failed, self.audio,
                            time.monotonic() - self.started)


def summary_line(files: int, transcribed: int, skipped: int, failed: int, audio: float, wall: float) -> str:
    """A job's last line: `audio` seconds transcribed in `wall` seconds; the real-time factor is
    wall time (the bundle's loading included) over audio time."""
    rtf = f"RTF {wall / audio:.3f}" if audio > 0 else "RTF n/a"  # nothing transcribed
    return (f"mxwr: {files} files: {transcribed} transcribed, {skipped} skipped, {failed} failed; "
            f"{audio / 3600:.3f} h of audio ({audio:.1f} s) in {wall:.1f} s wall; {rtf}")
