"""`mxwr serve` as a real process on localhost, driven by the official `openai` client: every
response_format against `mxwr run`'s output for the same options, streaming, translations, the
models list, 8 concurrent clients, OpenAI's error shapes and statuses, the limits (size,
duration, queue), disconnects, and dynamic batching on a `--batch 4` bundle."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai  # the official client (the test extra)
import pytest

from support import BIN, DEV, ROOT, run_cli, short_clips


KEY = "sk-mxw-test"
JFK = DEV / "jfk.flac"
JFK_WAV = ROOT / "samples" / "jfk.wav"


# -- a server process -----------------------------------------------------------------------------


class Server:
    def __init__(self, bundle: Path, log: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "mxwr"), "serve", str(bundle), "--host", "127.0.0.1", "--port", str(self.port),
                 "--device", "cpu", "--api-key", KEY, *args],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mxwr serve exited ({self.proc.returncode}):\n{log.read_text()}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"mxwr serve did not become healthy:\n{log.read_text()}")

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict]:
        return _http(urllib.request.Request(self.url + path, headers=headers or {}))

    def post(self, path: str, fields: dict, file: tuple[str, bytes] | None, key: str = KEY) -> tuple[int, dict | str]:
        body, content_type = _multipart(fields, file)
        request = urllib.request.Request(self.url + path, data=body, method="POST", headers={
            "Content-Type": content_type, "Authorization": f"Bearer {key}"})
        return _http(request)

    def health(self) -> dict:
        return self.get("/health")[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(request) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in ctype else raw.decode()


def _multipart(fields: dict, file: tuple[str, bytes] | None) -> tuple[bytes, str]:
    boundary = "mxwtestboundary7d1f"
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file[1] + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def assert_openai_error(body: dict, status: int, got: int, param: str | None = "unset") -> None:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}, nothing else."""
    assert got == status, body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    if param != "unset":
        assert body["error"]["param"] == param, body


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    s = Server(tiny_bundle, tmp_path_factory.mktemp("serve") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(tiny_bundle, tmp_path_factory) -> dict:
    """`mxwr run` on jfk.flac with its defaults, every output file; and with word timestamps."""
    out = tmp_path_factory.mktemp("run")
    run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--device", "cpu", "-o", str(out / "plain"), check=True)
    run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--device", "cpu", "--word_timestamps", "True",
            "-o", str(out / "words"), "-f", "json", check=True)
    ref = {fmt: (out / "plain" / f"jfk.{fmt}").read_text(encoding="utf-8") for fmt in ("srt", "vtt")}
    ref["result"] = json.loads((out / "plain" / "jfk.json").read_text())
    ref["words"] = json.loads((out / "words" / "jfk.json").read_text())
    return ref


def _transcribe(client, clip: Path = JFK, **options):
    with open(clip, "rb") as f:
        return client.audio.transcriptions.create(file=f, model="whisper-1", **options)


SEGMENT_KEYS = ("id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob", "compression_ratio",
                "no_speech_prob")


def assert_segments(theirs: list, ours: list[dict]) -> None:
    """OpenAI-shaped segments (client objects) against openai-whisper's result segments."""
    assert len(theirs) == len(ours)
    for a, b in zip(theirs, ours):
        a = a.model_dump() if hasattr(a, "model_dump") else a
        assert {k: a[k] for k in SEGMENT_KEYS} == {k: b[k] for k in SEGMENT_KEYS}


# -- formats, against `mxwr run` -------------------------------------------------------------------


def test_json_is_mxwr_runs_text(server, reference):
    got = _transcribe(server.client())
    assert got.text == reference["result"]["text"].strip()
    assert "ask not what your country can do for you" in got.text


def test_text_srt_vtt_are_mxwr_runs_output(server, reference, tiny_bundle):
    client = server.client()
    stdout = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--device", "cpu", check=True).stdout
    assert _transcribe(client, response_format="text") == stdout
    for fmt in ("srt", "vtt"):
        assert _transcribe(client, response_format=fmt) == reference[fmt]


def test_verbose_json_is_openais_shape_with_mxwr_runs_segments(server, reference):
    got = _transcribe(server.client(), response_format="verbose_json")
    ref = reference["result"]
    assert got.language == "english" and got.text == ref["text"].strip()
    assert got.duration == pytest.approx(11.0, abs=0.1)
    assert_segments(got.segments, ref["segments"])
    assert got.words is None  # segment granularity is the default


def test_word_timestamps_are_mxwr_runs(server, reference):
    got = _transcribe(server.client(), response_format="verbose_json", timestamp_granularities=["word", "segment"])
    ref = reference["words"]  # --word_timestamps True also moves the seek (so the segments may differ)
    assert_segments(got.segments, ref["segments"])
    words = [w for s in ref["segments"] for w in s["words"]]
    assert [(w.word, w.start, w.end) for w in got.words] == [(w["word"].strip(), w["start"], w["end"]) for w in words]
    assert len(got.words) >= 20
    only_words = _transcribe(server.client(), response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.segments is None and only_words.words == got.words


def test_stream_deltas_join_to_the_text(server, reference):
    events = list(_transcribe(server.client(), stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    assert len(events) - 1 == len([s for s in reference["result"]["segments"] if s["text"]])  # one per segment
    assert "".join(e.delta for e in events[:-1]) == events[-1].text == reference["result"]["text"].strip()


def test_translation_is_mxwr_runs(server, tiny_bundle):
    """tiny.en cannot translate: `mxwr run --task translate` refuses it, and so does the server, in
    OpenAI's shape (a multilingual bundle translates through the same task option)."""
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(JFK), "--device", "cpu", "--task", "translate")
    assert proc.returncode == 1
    with open(JFK, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        server.client().audio.translations.create(file=f, model="whisper-1", response_format="text")
    assert proc.stderr.strip() == f"mxwr: error: {e.value.body['message']}"


def test_prompt_temperature_and_language_are_mxwr_runs_options(server, tiny_bundle):
    """The form's prompt is --initial_prompt, its temperature the first of the fallback's."""
    clip = DEV / "ls_tc_1089-134686-0000.wav"
    proc = run_cli("mxwr", "run", str(tiny_bundle), str(clip), "--device", "cpu", "-f", "json",
                   "--initial_prompt", "Harvard sentences.", "--temperature", "0.2", "--language", "en", check=True)
    ref = json.loads(proc.stdout)
    got = _transcribe(server.client(), clip, response_format="verbose_json", prompt="Harvard sentences.",
                      temperature=0.2, language="en")
    assert_segments(got.segments, ref["segments"])
    assert got.text == ref["text"].strip()


def test_models_and_health(server, tiny_bundle):
    models = server.client().models.list().data
    assert [m.id for m in models] == ["tiny.en"]
    card = models[0].model_dump()
    assert card["dims"]["n_vocab"] == 51864 and card["dtype"] == "float32" and card["targets"] == ["cpu"]
    assert card["quantization"] == "none"
    assert server.client().models.retrieve("whisper-1").id == "tiny.en"  # any id names the one bundle
    status, health = server.get("/health")
    assert status == 200 and health["status"] == "ok"


# -- concurrency, errors ----------------------------------------------------------------------------


def test_eight_concurrent_clients_get_mxwr_runs_answers(server, tiny_bundle):
    """Results never depend on what else is served: the near-silent clip falls back to
    sampling (seeded per request, as --seed), and still equals `mxwr run`'s."""
    clips = short_clips()
    jobs = [clips[i % len(clips)] for i in range(8)]
    proc = run_cli("mxwr", "run", str(tiny_bundle), *map(str, clips), "--device", "cpu", "-f", "json", check=True)
    refs = dict(zip(clips, map(json.loads, proc.stdout.splitlines())))
    before = server.health()["served"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: _transcribe(server.client(), c, response_format="verbose_json"), jobs))
    for clip, got in zip(jobs, results):
        assert got.text == refs[clip]["text"].strip(), clip.name
        assert_segments(got.segments, refs[clip]["segments"])
    assert any(s["temperature"] > 0 for r in refs.values() for s in r["segments"])  # sampling was exercised
    assert server.health()["served"] - before == 8


def test_errors_have_openais_shape_and_status(server):
    client = server.client()
    with pytest.raises(openai.APIStatusError) as e:  # 25 MiB is OpenAI's limit, and ours
        client.audio.transcriptions.create(file=("big.wav", b"\0" * (25 * 1024 * 1024 + 1)), model="whisper-1")
    assert e.value.status_code == 413 and e.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(file=("notes.wav", b"this is not audio " * 100), model="whisper-1")
    assert "cannot decode" in e.value.message and "'notes.wav'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        _transcribe(client, response_format="mp3")
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.AuthenticationError) as e:
        _transcribe(server.client("sk-wrong"))
    assert e.value.body["code"] == "invalid_api_key"

    # The raw bodies, as a non-Python client sees them.
    status, body = server.post("/v1/audio/transcriptions", {"model": "whisper-1", "response_format": "mp3"},
                               ("jfk.wav", JFK_WAV.read_bytes()))
    assert_openai_error(body, 400, status, "response_format")
    status, body = server.post("/v1/audio/transcriptions", {"model": "whisper-1"}, ("x.wav", b"RIFF...."))
    assert_openai_error(body, 400, status, "file")
    status, body = server.post("/v1/audio/transcriptions", {"model": "whisper-1"}, ("jfk.wav", b"1"), key="nope")
    assert_openai_error(body, 401, status)
    status, body = server.post("/v1/audio/transcriptions", {"model": "whisper-1", "temperature": "hot"},
                               ("jfk.wav", b"1"))
    assert_openai_error(body, 400, status, "temperature")
    status, body = server.post("/v1/audio/transcriptions", {"model": "whisper-1"}, None)
    assert_openai_error(body, 400, status, "file")
    status, body = server.get("/v1/models")  # no key
    assert_openai_error(body, 401, status)
    status, body = server.get("/v1/nothing-here", {"Authorization": f"Bearer {KEY}"})
    assert_openai_error(body, 404, status)

    assert _transcribe(client, JFK_WAV).text.startswith("And so my fellow Americans")  # still serving
    assert server.proc.poll() is None and "Traceback" not in server.log.read_text()


# -- limits, disconnects --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tiny_bundle, tmp_path_factory):
    """One request decoding, one waiting: the queue's limit is reachable."""
    s = Server(tiny_bundle, tmp_path_factory.mktemp("serve-small") / "server.log",
               "--concurrency", "1", "--max-queue", "1", "--max-duration", "20")
    yield s
    s.stop()


def _partial_upload(server: Server) -> socket.socket:
    """A request that has sent its headers and part of its body: it holds a slot."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n".encode())
    return sock


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_full_queue_is_429_and_a_disconnect_frees_its_slot(small_server):
    s = small_server
    holders = [_partial_upload(s), _partial_upload(s)]
    _wait_for(lambda: s.health()["slots"] == 2, "two slots held")
    with pytest.raises(openai.RateLimitError) as e:
        _transcribe(s.client(), JFK_WAV)
    assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
    holders.pop().close()  # this client goes away: its slot is free again
    _wait_for(lambda: s.health()["slots"] == 1, "the slot freed")
    assert _transcribe(s.client(), JFK_WAV).text.startswith("And so my fellow Americans")
    holders.pop().close()
    _wait_for(lambda: s.health()["slots"] == 0, "every slot freed")


def test_a_waiting_request_whose_client_leaves_is_dropped(small_server):
    s = small_server
    before = s.health()["served"]
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_transcribe, s.client(), JFK_WAV)
        _wait_for(lambda: s.health()["decoding"] == 1, "the first request decoding", timeout=10)
        body, content_type = _multipart({"model": "whisper-1"}, ("jfk.wav", JFK_WAV.read_bytes()))
        sock = socket.create_connection(("127.0.0.1", s.port))  # a second one, waiting behind it
        sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        _wait_for(lambda: s.health()["queued"] == 1, "the second request queued", timeout=10)
        sock.close()
        _wait_for(lambda: s.health()["queued"] == 0, "the queued request dropped", timeout=10)
        assert first.result().text.startswith("And so my fellow Americans")
    _wait_for(lambda: s.health()["slots"] == 0, "every slot freed")
    assert s.health()["served"] - before == 1  # the one that left was never decoded


def test_too_long_audio_is_400(small_server):
    with pytest.raises(openai.BadRequestError) as e:
        _transcribe(small_server.client(), DEV / "long_osr_us_000_0034_8k.wav")  # 35 s > --max-duration 20
    assert "max_duration" in e.value.message and e.value.body["param"] == "file"
    assert small_server.health()["status"] == "ok"


def test_health_and_models_are_503_while_loading(tiny_bundle):
    """In process: the app answers before its worker has loaded the model."""
    from mxwr.serve import create_app

    app = create_app(tiny_bundle, device="cpu")  # lifespan not run: nothing loaded

    async def get(path: str) -> tuple[int, dict]:
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                   "headers": [], "scheme": "http", "server": ("127.0.0.1", 1), "http_version": "1.1"},
                  receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], json.loads(body)

    assert asyncio.run(get("/health")) == (503, {"status": "loading"})
    status, body = asyncio.run(get("/v1/models"))
    assert_openai_error(body, 503, status)


# -- dynamic batching ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny.en-batch4.mxw"
    run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--max-seq", "448", "--batch", "4",
            "-o", str(out), check=True)
    return out


def test_dynamic_batching_gives_mxwr_run_independent_windows(batch_bundle, tmp_path):
    """On a --batch 4 bundle concurrent requests' windows decode together, and each request gets
    what `mxwr run --independent_windows True` gives for its file alone."""
    clips = short_clips() + [DEV / "long_osr_us_000_0034_8k.wav"]  # that one spans two windows
    jobs = [clips[i % len(clips)] for i in range(8)]
    refs = {}
    proc = run_cli("mxwr", "run", str(batch_bundle), *map(str, clips), "--device", "cpu", "-f", "json",
                   "--independent_windows", "True", check=True)
    refs = dict(zip(clips, map(json.loads, proc.stdout.splitlines())))
    s = Server(batch_bundle, tmp_path / "server.log")
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda c: _transcribe(s.client(), c, response_format="verbose_json"), jobs))
        for clip, got in zip(jobs, results):
            assert got.text == refs[clip]["text"].strip(), clip.name
            assert_segments(got.segments, refs[clip]["segments"])
        stats = s.health()
        assert stats["windows"] == sum(len(refs[c]["segments"]) for c in jobs)
        assert stats["batches"] < stats["windows"]  # some batches held several requests' windows
        events = list(_transcribe(s.client(), jobs[-1], stream=True))
        assert "".join(e.delta for e in events[:-1]) == events[-1].text == refs[jobs[-1]]["text"].strip()
    finally:
        s.stop()


def test_serve_requires_the_signature(tiny_bundle, reference, tmp_path):
    """`mxwr serve --require-signature` (or MXW_REQUIRE_SIGNATURE): an unsigned or tampered
    bundle is one line and exit 1 before the server starts; a correctly signed one serves."""
    import os
    import shutil

    from support import assert_one_line_error

    run_cli("mxwc", "keygen", "--out", str(tmp_path / "key"), check=True)
    signed = tmp_path / "signed.mxw"
    shutil.copyfile(tiny_bundle, signed)
    run_cli("mxwc", "sign", str(signed), "--key", str(tmp_path / "key"), check=True)
    pub = str(tmp_path / "key.pub")
    tampered = tmp_path / "tampered.mxw"
    shutil.copyfile(signed, tampered)
    from mxwr.bundle import BundleReader

    with BundleReader(tampered) as r:
        weights = r.section(r.manifest.targets[0].weights_section)
    with open(tampered, "r+b") as f:  # one weight's byte: the section's checksum no longer holds
        f.seek(weights.offset + weights.length // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    for bundle, needle in [(tiny_bundle, "is not signed"), (tampered, "checksum mismatch")]:
        proc = run_cli("mxwr", "serve", str(bundle), "--port", str(_free_port()), "--require-signature", pub, timeout=120)
        assert_one_line_error(proc, needle)
        proc = run_cli("mxwr", "serve", str(bundle), "--port", str(_free_port()), timeout=120,
                       env={**os.environ, "MXW_REQUIRE_SIGNATURE": pub})
        assert_one_line_error(proc, needle)
    s = Server(signed, tmp_path / "server.log", "--require-signature", pub)
    try:
        assert _transcribe(s.client()).text == reference["result"]["text"].strip()  # OpenAI strips it
    finally:
        s.stop()
