"""`mxwr serve`: OpenAI's audio API over one loaded bundle (Starlette on uvicorn: the serve extra).

    POST /v1/audio/transcriptions, /v1/audio/translations   (multipart, as OpenAI's clients send)
    GET  /v1/models, /v1/models/{id}, /health

How requests run. The model is one set of device buffers, so one worker thread owns it and does
every decode; the event loop only parses, converts (in threads) and answers, so /health, 429s
and disconnects are seen at once. A request holds a slot from its arrival to its last byte:
`concurrency` of them decode (taking turns one 30-second window at a time, so a short request is
not stuck behind a long one), up to `max_queue` more wait; past that, 429. A client that goes
away frees its slot when the window being decoded ends (a graph run is not interrupted).

What a request returns: `mxwr run`'s transcript for the same options (`transcribe()`: seeking,
conditioning on previous text, temperature fallback from the request's temperature by 0.2, the
`whisper` command's beam_size/best_of 5 where the bundle has beams, sampling seeded per request
with `seed`, default 0, as `--seed`). On a bundle built with `--batch N` (N > 1), or with
`--independent-windows True`, requests decode
as `mxwr run --independent_windows True` does — each 30-second window by openai-whisper's
`decode()` at the request's temperature, no seeking, no conditioning, no fallback — so that the
windows of concurrent requests decode together in one batch (dynamic batching); the request's
prompt conditions each of its windows. Only requests with the same decoding options share a
batch, and a request that samples (temperature > 0) decodes on its own, so a result never
depends on what else is being served. Word timestamps need the alignment after each window's
decode: such requests take the `transcribe()` path on any bundle.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .api import Model, bytes_stream, load
from .audio import AudioStream
from .constants import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from .decoding import DecodingOptions, DecodingTask
from .errors import AudioError, MxwError
from .transcribe import TranscribeOptions, _windows_result
from .writers import render

log = logging.getLogger("mxwr.serve")

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
GRANULARITIES = ("word", "segment")
MiB = 1024 * 1024
_FORM_SLACK = 64 * 1024  # bytes of multipart framing and text fields allowed beyond the file itself


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 25 * MiB  # OpenAI's limit on the file
    max_duration: float | None = 3600.0  # seconds of audio; None: no limit
    max_queue: int = 32  # requests waiting beyond those decoding
    concurrency: int | None = None  # requests decoding (taking turns / sharing a batch); None: max(4, batch)
    independent_windows: bool | None = None  # the decode()-per-window path; None: on --batch N bundles


# -- OpenAI's error shape ---------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as OpenAI's API answers it: `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _internal(e: BaseException) -> ApiError:
    """An exception we did not expect: logged with its traceback here, one line for the client."""
    log.error("internal error: %s", "".join(traceback.format_exception(e)).rstrip())
    return ApiError(500, f"internal error ({type(e).__name__}); the server's log has the details",
                    type="server_error")


def _bad_input(e: MxwError, param: str | None = "file") -> ApiError:
    return ApiError(400, str(e)[:300], param=param)


# -- requests as jobs ---------------------------------------------------------------------------


@dataclass(eq=False)  # each job is itself: compared and hashed by identity
class Job:
    """One request's decode, handed from the event loop to the worker."""

    stream: AudioStream
    seek: TranscribeOptions | None  # the transcribe() path, or
    windows: DecodingOptions | None  # the independent-windows path (batched)
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # ("segments", [...]) ... ("done", result) | ("error", ApiError)
    cancelled: bool = False
    finished: bool = False
    generator: Generator[list[dict[str, Any]], None, dict[str, Any]] | None = None
    offsets: list[int] = field(default_factory=list)  # windows path: each window's first sample
    segments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.stream.n_samples / SAMPLE_RATE

    def emit(self, event: tuple[str, Any]) -> None:
        """From the worker thread to the request's handler."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is going down
            pass


class Worker:
    """The one thread that loads the model and decodes; requests' slots are counted here."""

    def __init__(self, bundle: str | Path, device: str, limits: Limits, on_load_error: Callable[[BaseException], None],
                 require_signature: str | Path | None = None):
        self.bundle, self.device, self.limits = bundle, device, limits
        self.require_signature = require_signature
        self.on_load_error = on_load_error
        self.model: Model | None = None
        self.load_error: BaseException | None = None
        self.concurrency = limits.concurrency or 4
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._active: list[Job] = []
        self._slots = 0  # requests holding a slot (from arrival to their end)
        self._turn = 0
        self._stopping = False
        self.served = 0  # requests decoded to the end
        self.batches = self.windows = 0  # the windows path: graph batches run, windows they decoded
        self.independent_windows: bool | None = None  # which path requests take, once loaded
        self._thread = threading.Thread(target=self._main, name="mxwr-decoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    @property
    def ready(self) -> bool:
        return self.model is not None

    # -- slots and jobs (called from the event loop) -------------------------------------------

    def reserve(self) -> bool:
        with self._cond:
            if self._slots >= self.concurrency + self.limits.max_queue:
                return False
            self._slots += 1
            return True

    def release(self) -> None:
        with self._cond:
            self._slots -= 1

    def submit(self, job: Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The client went away: a waiting job leaves the queue (and its slot) now; a decoding
        one when its current window ends."""
        with self._cond:
            if job.finished:
                return
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                self._finish(job)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"decoding": len(self._active), "queued": len(self._queue), "slots": self._slots,
                    "concurrency": self.concurrency, "max_queue": self.limits.max_queue, "served": self.served,
                    "batches": self.batches, "windows": self.windows,
                    "independent_windows": self.independent_windows}

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            model = load(self.bundle, device=self.device, require_signature=self.require_signature)
            if self.limits.concurrency is None:
                self.concurrency = max(4, model.batch)  # a batch's worth of requests can share it
            self.independent_windows = (model.batch > 1 if self.limits.independent_windows is None
                                        else self.limits.independent_windows)
            self.model = model
        except BaseException as e:  # reported by `mxwr serve` as its error, then it exits
            self.load_error = e
            self.on_load_error(e)
            return
        log.info("mxwr: %s loaded (%s, %s)", model.name, model.target, model.dtype)
        while True:
            with self._cond:
                while not self._stopping and not self._queue and not self._active:
                    self._cond.wait()
                if self._stopping:
                    return
                while self._queue and len(self._active) < self.concurrency:
                    self._active.append(self._queue.popleft())
                for job in [j for j in self._active if j.cancelled]:
                    self._active.remove(job)
                    self._finish(job)
                if not self._active:
                    continue
                job = self._active[self._turn % len(self._active)]
                self._turn += 1
                companions = self._companions(job) if job.windows is not None else []
            try:
                if job.windows is not None:
                    self._decode_batch(job, companions)
                else:
                    self._advance(job)
            except MxwError as e:
                self._fail(job, _bad_input(e, param=None))
            except MemoryError:
                self._fail(job, ApiError(500, "out of memory", type="server_error"))
            except Exception as e:
                self._fail(job, _internal(e))

    def _finish(self, job: Job) -> None:
        """Under the lock: the job's end (done, failed or cancelled) frees its slot."""
        if job.finished:
            return
        job.finished = True
        if job in self._active:
            self._active.remove(job)
        if job.generator is not None:
            job.generator.close()
        job.stream.close()
        self._slots -= 1

    def _done(self, job: Job, result: dict[str, Any]) -> None:
        with self._cond:
            self.served += 1
            self._finish(job)
        job.emit(("done", result))

    def _fail(self, job: Job, error: ApiError) -> None:
        with self._cond:
            self._finish(job)
        job.emit(("error", error))

    def _advance(self, job: Job) -> None:
        """The transcribe() path: one more window of the seek loop."""
        if job.generator is None:
            job.generator = self.model.transcriber.transcribe_windows(job.stream, job.seek)
        try:
            segments = job.generator.send(None)
        except StopIteration as done:
            job.generator = None
            self._done(job, done.value)
            return
        job.emit(("segments", segments))

    def _companions(self, first: Job) -> list[Job]:
        """Under the lock: the jobs whose windows decode with `first`'s in one batch: those with
        the same options, unless they sample (a sampler's draws depend on the row)."""
        if first.windows.temperature > 0:
            return [first]
        n = len(self._active)
        start = self._active.index(first)
        ordered = [self._active[(start + k) % n] for k in range(n)]
        return [j for j in ordered if j.windows == first.windows and not j.cancelled]

    def _decode_batch(self, first: Job, jobs: list[Job]) -> None:
        """The independent-windows path: up to a batch of windows, the oldest of each job first,
        decoded together (as `Transcriber.decode_windows`, across requests)."""
        t = self.model.transcriber
        for job in jobs:
            if not job.offsets:
                job.offsets = list(range(0, max(job.stream.n_samples, 1), N_SAMPLES))
        rows: list[tuple[Job, int]] = []
        for job in jobs:
            for s in job.offsets[len(job.segments):]:
                if len(rows) == t.model.batch:
                    break
                rows.append((job, s))
        task = DecodingTask(t.model, t.special, first.windows)
        results = task.run(t.model.encode(t._mels([job.stream.read(s, N_SAMPLES) for job, s in rows])))
        self.batches, self.windows = self.batches + 1, self.windows + len(rows)
        for (job, s), r in zip(rows, results):
            end = min(s + N_SAMPLES, job.stream.n_samples)
            segment = {"id": len(job.segments), "seek": s // HOP_LENGTH, "start": s / SAMPLE_RATE,
                       "end": end / SAMPLE_RATE, **asdict(r)}
            job.segments.append(segment)
            job.emit(("segments", [segment]))
        for job in dict.fromkeys(j for j, _ in rows):
            if len(job.segments) == len(job.offsets):
                self._done(job, _windows_result(job.segments))


# -- the request's options ----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioRequest:
    task: str
    response_format: str
    stream: bool
    words: bool
    segments: bool
    seek: TranscribeOptions | None
    windows: DecodingOptions | None


def _field(form, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    value = value.strip()
    return value or None


def _parse_bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"'{value}' is not a valid boolean for '{name}'", param=name)


def request_options(model: Model, form, task: str, independent_windows: bool | None = None) -> AudioRequest:
    """The form's fields as decode options: `mxwr run`'s defaults unless the request says otherwise."""
    fmt = _field(form, "response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"'{fmt}' is not one of {list(RESPONSE_FORMATS)} - 'response_format'",
                       param="response_format")
    stream = _parse_bool(_field(form, "stream"), "stream")
    if stream and fmt not in ("json", "text"):
        raise ApiError(400, f"streaming is not supported with response_format '{fmt}' (json or text)",
                       param="stream")
    granularities = [g.strip() for key in ("timestamp_granularities[]", "timestamp_granularities")
                     for g in form.getlist(key) if isinstance(g, str) and g.strip()]
    for g in granularities:
        if g not in GRANULARITIES:
            raise ApiError(400, f"'{g}' is not one of {list(GRANULARITIES)} - 'timestamp_granularities'",
                           param="timestamp_granularities")
    if granularities and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format 'verbose_json'",
                       param="timestamp_granularities")
    words = "word" in granularities
    segments = "segment" in granularities or not granularities

    raw = _field(form, "temperature")
    try:
        temperature = float(raw) if raw is not None else 0.0
    except ValueError:
        raise ApiError(400, f"'{raw}' is not a number - 'temperature'", param="temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature must be between 0 and 1, not {raw}", param="temperature")
    raw = _field(form, "seed")
    try:
        seed = int(raw) if raw is not None else 0
    except ValueError:
        raise ApiError(400, f"'{raw}' is not an integer - 'seed'", param="seed") from None

    special = model.transcriber.special
    if task == "translate" and not special.multilingual:  # before the upload is decoded (as `mxwr run` says it)
        raise ApiError(400, "this is an English-only model: it transcribes English and cannot translate",
                       param="model")
    language = _field(form, "language") if task == "transcribe" else None
    if language is not None:
        language = language.lower()
        if not special.multilingual:
            language = "en"  # as `mxwr run` (and the whisper command) does on English-only models
        elif language not in special.languages:
            raise ApiError(400, f"'{language}' is not a language code this model knows (ISO-639-1, e.g. 'en')",
                           param="language")
    elif not special.multilingual:
        language = "en"
    prompt = _field(form, "prompt")

    # `mxwr run`'s defaults: the whisper command's beam_size 5 and best_of 5 where the bundle
    # decodes that many sequences, greedy otherwise; fallback from the temperature by 0.2.
    size = 5 if model.beams > 1 else None
    if independent_windows is None:
        independent_windows = model.batch > 1
    if independent_windows and not words:  # the independent-windows path: one decode per window
        fields = dict(beam_size=size) if temperature == 0 else dict(best_of=size)
        windows = DecodingOptions(task=task, language=language, temperature=temperature, seed=seed,
                                  prompt=prompt, **fields)
        return AudioRequest(task, fmt, stream, words, segments, None, windows)
    temperatures = tuple(float(t) for t in np.arange(temperature, 1.0 + 1e-6, 0.2))
    seek = TranscribeOptions(
        temperature=temperatures, initial_prompt=prompt, word_timestamps=words,
        decode_options=DecodingOptions(task=task, language=language, beam_size=size, best_of=size, seed=seed),
    )
    return AudioRequest(task, fmt, stream, words, segments, seek, None)


# -- answers ------------------------------------------------------------------------------------


def _usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def render_result(req: AudioRequest, result: dict[str, Any], duration: float) -> Response:
    """`result` (openai-whisper's dict) in the request's response_format, as OpenAI's API gives it."""
    text = result["text"].strip()
    fmt = req.response_format
    if fmt == "json":
        return JSONResponse({"text": text, "usage": _usage(duration)})
    if fmt == "text":  # what `mxwr run` prints
        return Response(text + "\n", media_type="text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):  # what `mxwr run --output_format srt|vtt` prints
        return Response(render(fmt, result), media_type="text/plain; charset=utf-8")
    body: dict[str, Any] = {"task": req.task, "language": LANGUAGES.get(result["language"], result["language"]),
                            "duration": duration, "text": text}
    if req.segments:
        body["segments"] = [
            {k: s[k] for k in ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                               "compression_ratio", "no_speech_prob")}
            for s in result["segments"]]
    if req.words:
        body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
                         for s in result["segments"] for w in s.get("words", [])]
    body["usage"] = _usage(duration)
    return JSONResponse(body)


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def _disconnected(receive) -> None:
    """Returns when the client has gone away (the body was read: the next message says so)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class JobResponse:
    """The answer to a submitted job (an ASGI response): it waits for the worker, watching for
    the client's disconnect meanwhile (which cancels the job and frees its slot)."""

    def __init__(self, worker: Worker, job: Job, req: AudioRequest):
        self.worker, self.job, self.req = worker, job, req

    async def __call__(self, scope, receive, send) -> None:
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            if self.req.stream:
                await self._stream(send, watcher)
            else:
                await self._whole(scope, send, watcher)
        finally:
            watcher.cancel()
            self.worker.cancel(self.job)  # nothing if it finished; else the client is gone

    async def _next(self, watcher: asyncio.Future) -> tuple[str, Any] | None:
        """The job's next event, or None once the client has disconnected."""
        getter = asyncio.ensure_future(self.job.events.get())
        await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def _whole(self, scope, send, watcher) -> None:
        while (event := await self._next(watcher)) is not None:
            kind, value = event
            if kind == "done":
                response = render_result(self.req, value, self.job.duration)
            elif kind == "error":
                response = value.response()
            else:
                continue
            await response(scope, _never, send)
            return

    async def _stream(self, send, watcher) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
        first = True
        # The deltas join to the final text: transcribe()'s segments carry their own spaces;
        # independent windows' texts are stripped, and joined by one.
        separator = " " if self.req.windows is not None else ""
        while (event := await self._next(watcher)) is not None:
            kind, value = event
            if kind == "segments":
                for s in value:
                    delta = s["text"].lstrip() if first else separator + s["text"] if s["text"] else ""
                    if delta:  # OpenAI's first event is the first text
                        first = False
                        await send({"type": "http.response.body", "body": _sse(
                            {"type": "transcript.text.delta", "delta": delta}), "more_body": True})
                continue
            if kind == "done":
                body = _sse({"type": "transcript.text.done", "text": value["text"].strip()})
            else:  # the openai client raises an APIError for an event carrying `error`
                body = _sse(value.body())
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return


async def _never():  # a response's `receive` that is never called
    raise RuntimeError("unreachable")


# -- the app ------------------------------------------------------------------------------------


def create_app(bundle: str | Path, *, device: str = "auto", limits: Limits = Limits(), api_key: str | None = None,
               on_load_error: Callable[[BaseException], None] | None = None,
               require_signature: str | Path | None = None) -> Starlette:
    """The ASGI app; the model loads in its worker thread when the app starts (/health: 503 until then).
    `require_signature`: a public key file; the bundle loads only if signed by it (`mxwr.load`)."""
    worker = Worker(bundle, device, limits, on_load_error or (lambda e: None), require_signature)
    created = int(time.time())

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "You didn't provide an API key (Authorization: Bearer KEY).", code="invalid_api_key")
        if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def ready_model() -> Model:
        if worker.model is None:
            raise ApiError(503, "the model is loading", type="server_error", code="model_loading")
        return worker.model

    def model_card(model: Model) -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": created, "owned_by": "mxw",
                "dims": model.dims, "dtype": model.dtype, "quantization": model.quantization, "target": model.target,
                "targets": model.targets, "batch": model.batch, "beams": model.beams}

    async def health(request: Request) -> Response:
        if worker.model is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": worker.model.name, **worker.stats()})

    async def models(request: Request) -> Response:
        check_key(request)
        return JSONResponse({"object": "list", "data": [model_card(ready_model())]})

    async def one_model(request: Request) -> Response:
        check_key(request)
        model = ready_model()  # any id names the one bundle, as in the audio requests
        return JSONResponse(model_card(model))

    async def audio(request: Request, task: str) -> Response | JobResponse:
        check_key(request)
        model = ready_model()
        length = request.headers.get("content-length")
        limit = limits.max_upload_bytes
        if length is not None and length.isdigit() and int(length) > limit + _FORM_SLACK:
            raise _too_large(limit)
        if not worker.reserve():
            raise ApiError(429, f"the server is busy ({worker.concurrency} requests decoding, "
                                f"{limits.max_queue} waiting); retry later", type="requests", code="rate_limit_exceeded")
        job = None
        try:
            form = await Request(request.scope, _limited(request.receive, limit + _FORM_SLACK)).form(
                max_files=1, max_fields=32)
            try:  # the upload may be spooled to a temporary file: closed whatever happens
                upload = form.get("file")
                if not isinstance(upload, UploadFile):
                    raise ApiError(400, "you must provide a 'file' (multipart/form-data)", param="file")
                if _field(form, "model") is None:
                    raise ApiError(400, "you must provide a model parameter", param="model")
                req = request_options(model, form, task, worker.independent_windows)
                data = await upload.read()
                if len(data) > limit:
                    raise _too_large(limit)
            finally:
                await form.close()
            try:  # WAV is read in place; other formats go through ffmpeg: in a thread, not here
                stream = await asyncio.to_thread(bytes_stream, data, limits.max_duration,
                                                 _display_name(upload.filename))
            except AudioError as e:
                raise _bad_input(e) from None
            del data
            job = Job(stream, req.seek, req.windows, asyncio.get_running_loop())
            worker.submit(job)
            return JobResponse(worker, job, req)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody reads it
        finally:
            if job is None:
                worker.release()

    async def transcriptions(request: Request) -> Response | JobResponse:
        return await audio(request, "transcribe")

    async def translations(request: Request) -> Response | JobResponse:
        return await audio(request, "translate")

    async def api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method not allowed ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        return ApiError(exc.status_code, message).response()

    async def unexpected(request: Request, exc: Exception) -> Response:
        return _internal(exc).response()

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", one_model, methods=["GET"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", translations, methods=["POST"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )
    app.state.worker = worker
    return app


def _display_name(filename: str | None) -> str:
    """The upload's name for an error message: printable, short."""
    name = "".join(c for c in (filename or "") if c.isprintable())[:80]
    return repr(name) if name else "the upload"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Maximum content size limit ({limit}) exceeded", code="content_too_large", param="file")


def _limited(receive, limit: int):
    """`receive` that fails once the body passes `limit` bytes (a chunked upload has no length)."""
    seen = [0]

    async def limited():
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise _too_large(limit - _FORM_SLACK)
        return message

    return limited


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, *, device: str = "auto",
          limits: Limits = Limits(), api_key: str | None = None, log_level: str = "info",
          require_signature: str | Path | None = None) -> None:
    """Runs the server until interrupted; a bundle that fails to load ends it with that error."""
    import uvicorn

    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_load_error(e: BaseException) -> None:
        failure.append(e)
        if server is not None:
            server.should_exit = True

    app = create_app(bundle, device=device, limits=limits, api_key=api_key, on_load_error=on_load_error,
                     require_signature=require_signature)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                           timeout_graceful_shutdown=5))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(message)s")
    server.run()
    if failure:
        raise failure[0]


LANGUAGES = {  # openai-whisper's code -> name (verbose_json's `language`, as OpenAI's API spells it)
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian", "lv":
    "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy":
    "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw":
    "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn":
    "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be":
    "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo":
    "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn":
    "nynorsk", "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese"
}
