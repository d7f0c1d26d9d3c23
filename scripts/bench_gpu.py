#!/usr/bin/env python3
"""GPU benchmark: mxw against openai-whisper (PyTorch fp16) and transformers Whisper (fp16, SDPA),
side by side in one run, on the same weights (those of the fp16 bundle).

Runs on the device machine; scripts/gpu/README.md is the procedure. Each engine runs in its own
subprocess, so the peak GPU memory reported is that engine's alone (NVML, this process's usage).

    python3 scripts/bench_gpu.py --fp16 B16.mxw --fp32 B32.mxw --batch-bundle BB.mxw \\
        --clips DIR --expected-cpu tokens.json --out results.json --markdown table.md

Figures:
- jfk end-to-end latency (warm, median): audio array -> log-mel -> encoder -> greedy tokens -> text.
  mxw runs its graphs as replayed device graphs (runtime/mxwr/replay.py); the same figures
  without replay are printed too.
- encoder time (median) and decoder time per token; for mxw also the step time at positions
  1..400 and the launch floor: kernels launched per step (MAX's launch trace) times the time to
  launch one minimal kernel (PyTorch, 1-element add, back to back, host-bound).
- batch throughput: 64 windows of 30 s, as real-time factor (audio seconds / wall seconds).
- peak GPU memory of the engine's process.
- parity: fp32 GPU tokens vs the CPU tokens (made on the CPU host by `mxwr run`), fp16 transcripts
  vs openai-whisper fp16.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchlib import median_time

ROOT = Path(__file__).resolve().parent.parent
N_WINDOWS = 64
PROMPT = [50257, 50362]  # tiny.en's <|startoftranscript|><|notimestamps|>


# ----------------------------------------------------------------------------------------------
# Shared helpers


class PeakMemory:
    """Polls NVML for the GPU's used memory; `stop()` returns the peak above the starting level
    in MiB. Engines run one at a time in their own processes, so the rise is that engine's."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self._base = self._used()
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _used(self) -> float:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used() - self._base)
            time.sleep(0.002)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def load_clips(clips: Path) -> dict[str, np.ndarray]:
    sys.path[:0] = [str(ROOT / "runtime")]
    from mxwr.audio import load_audio

    return {p.name: load_audio(p) for p in sorted(clips.glob("*.wav"))}


def batch_windows(clips: dict[str, np.ndarray]) -> list[np.ndarray]:
    """64 windows of 30 s of real speech: the clips end to end, repeated, cut every 30 s."""
    speech = np.concatenate([a for name, a in clips.items() if not name.startswith("ns_")])
    need = N_WINDOWS * 480_000
    tiled = np.tile(speech, need // len(speech) + 1)[:need]
    return list(tiled.reshape(N_WINDOWS, 480_000))


def tokens_of(result: dict) -> list[int]:
    """A file's sampled tokens, window after window."""
    return [t for seg in result["segments"] for t in seg["tokens"]]


def reference_weights(bundle: str):
    """The fp16 bundle's weights (openai-whisper state dict), so every engine runs on them."""
    sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "compiler")]
    from mxwc.conformance import weights_from_bundle
    from mxwr.bundle import BundleReader

    reader = BundleReader(bundle)
    target = reader.manifest.targets[0].name
    return weights_from_bundle(reader, target)


def launch_latency_s() -> float:
    """Host-bound time to launch one minimal kernel back to back (PyTorch)."""
    import torch

    x = torch.zeros(1, device="cuda")
    for _ in range(100):
        x.add_(1)
    torch.cuda.synchronize()
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        x.add_(1)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


# ----------------------------------------------------------------------------------------------
# Engines (each in its own process)


def engine_mxw(args) -> dict:
    sys.path[:0] = [str(ROOT / "runtime")]
    from mxwr import gpu_memory
    from mxwr.bundle import BundleReader
    from mxwr.transcribe import Transcriber

    # One process loads every bundle below, one after another: MAX sizes its graph pool once, so
    # for the largest of them (the batch bundle), not for whichever loads first.
    readers = [BundleReader(b) for b in (args.fp32, args.fp16, args.batch_bundle) if b]
    gpu_memory.reserve_bytes(max(gpu_memory.bundle_needs(r.manifest) for r in readers))
    clips = load_clips(Path(args.clips))
    out: dict = {"engine": "mxw"}
    memory = PeakMemory()

    # fp32 on the GPU: tokens must equal the CPU's.
    if args.fp32:
        t32 = Transcriber(args.fp32, device="gpu")
        expected = json.loads(Path(args.expected_cpu).read_text())
        got = {name: tokens_of(r) for name, r in zip(clips, t32.decode_windows(list(clips.values())))}
        out["fp32_tokens_equal_cpu"] = {name: got[name] == expected[name] for name in expected}
        del t32

    t = Transcriber(args.fp16, device="gpu")
    out["target"] = t.model.target.name
    jfk = clips["jfk_inaugural.wav"]
    results = dict(zip(clips, t.decode_windows(list(clips.values()))))
    out["fp16_texts"] = {name: r["text"] for name, r in results.items()}
    out["fp16_tokens"] = {name: tokens_of(r) for name, r in results.items()}
    out["e2e_s"] = median_time(lambda: next(t.decode_windows([jfk])))

    device = t.model.device
    mel = t.mel(jfk)[None]

    def encode():
        t.model.encode(mel)
        device.synchronize()

    out["encoder_s"] = median_time(encode)
    out["e2e_phases_s"] = e2e_phases(t, jfk)

    step_times, kernels = step_profile(t.model)
    out["step_s_by_position"] = step_times
    out["replayed_step_launches"] = kernels["launches"]
    out["step_gpu_s"] = kernels["back_to_back_s"]

    # The same bundle without device-graph replay: every kernel launched from the host.
    eager = Transcriber(args.fp16, device="gpu", replay="off")
    eager_results = dict(zip(clips, eager.decode_windows(list(clips.values()))))
    out["replay_tokens_equal_eager"] = {n: tokens_of(eager_results[n]) == out["fp16_tokens"][n] for n in clips}
    out["e2e_eager_s"] = median_time(lambda: next(eager.decode_windows([jfk])))
    eager_steps, eager_kernels = step_profile(eager.model, positions=(10,))
    out["step_eager_s"] = eager_steps[10]
    out["step_kernels"] = eager_kernels["kernels"]
    out["step_copies"] = eager_kernels["copies"]
    out["step_ops"] = eager_kernels["ops"]
    out["launch_latency_s"] = launch_latency_s()
    out["kernel_profile"] = kernel_profile(eager.model)

    if args.batch_bundle:
        tb = Transcriber(args.batch_bundle, device="gpu")
        windows = batch_windows(clips)
        list(tb.decode_windows(windows[: tb.model.batch]))  # warm-up
        start = time.perf_counter()
        list(tb.decode_windows(windows))
        out["batch"] = tb.model.batch
        out["batch_rtfx"] = N_WINDOWS * 30.0 / (time.perf_counter() - start)
    out["peak_mem_mib"] = memory.stop()
    return out


def e2e_phases(t, audio: np.ndarray) -> dict[str, float]:
    """Where one window's end-to-end time goes: the log-mel (audio to the device and the front
    end), the encoder, the prefill (token read back), each run alone; the rest is the step loop
    and the host's work around it."""
    model, device = t.model, t.model.device
    _, ctx, decoder, cache, _ = _decoder_ready(model)

    def mel():
        t._mels([audio])
        device.synchronize()

    def prefill():
        model.prefill(ctx, cache, np.array([decoder.initial_tokens] * model.batch), decoder.sot_index,
                      decoder.suppress_first).token.to_numpy()

    return {"log-mel": median_time(mel), "prefill": median_time(prefill)}


def step_profile(model, positions=(1, 10, 50, 100, 200, 300, 400)) -> tuple[dict[int, float], dict]:
    """The decoder step's time by position (token in, token read back, as the decode loop does),
    the kernels and copies one step launches (MAX's launch trace), and the time per step when 50
    steps run back to back with one read at the end (the GPU's own time, host hidden)."""
    from max import driver

    _, ctx, decoder, cache, token = _decoder_ready(model)
    times = {}
    for pos in positions:
        def step():
            model.step(ctx, cache, token, pos, decoder.suppress).token.to_numpy()
        times[pos] = median_time(step, repeats=200, warmup=10)
    with driver.launch_trace() as entries:
        model.step(ctx, cache, token, 10, decoder.suppress).token.to_numpy()
    kinds = [str(e.kind) for e in entries]
    profile = {"kernels": sum("KERNEL" in k for k in kinds), "copies": sum("MEMCPY" in k for k in kinds),
               "launches": len(kinds), "ops": [f"{e.kind.name}:{e.name}" for e in entries]}
    def run_50():
        out = None
        for pos in range(10, 60):
            out = model.step(ctx, cache, token if out is None else out.token, pos, decoder.suppress)
        out.token.to_numpy()
    profile["back_to_back_s"] = median_time(run_50, repeats=20, warmup=2) / 50
    return times, profile


def kernel_profile(model, runs: int = 20) -> dict:
    """GPU time of one decoder step, one encoder run, one prefill and one front-end run (the
    log-mel of 30 s of audio) as the sum of their kernels' durations (CUPTI, through
    torch.profiler, which records every kernel of the process), and the kernels that take most
    of it."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.zeros(1, device="cuda")
    mel, ctx, decoder, cache, token = _decoder_ready(model)

    def step():
        model.step(ctx, cache, token, 10, decoder.suppress).token.to_numpy()

    def encode():
        model.encode(mel)
        model.device.synchronize()

    def prefill():
        model.prefill(ctx, cache, np.array([PROMPT] * model.batch), 0, decoder.suppress_first).token.to_numpy()

    def front_end():
        model.log_mel([np.zeros(480_000, np.float32)])
        model.device.synchronize()

    result = {}
    for name, run in (("step", step), ("encoder", encode), ("prefill", prefill), ("front end", front_end)):
        run()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                run()
        events = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
        kernels: dict[str, list[float]] = {}
        for e in events:
            kernels.setdefault(e.name[:80], []).append(e.device_time)  # µs
        total = sum(sum(t) for t in kernels.values()) / runs
        top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:5]
        per_run = len(events) // runs
        result[name] = {"gpu_us": total, "kernels": len(events) / runs,
                        "top": [(k, sum(t) / runs, len(t) / runs) for k, t in top],
                        # The last run's kernels in launch order: what to fuse next.
                        "sequence": [(e.name[:80], e.device_time) for e in events[-per_run:]]}
    return result


def _decoder_ready(model):
    """(silent mel, its context, a greedy task, a cache, the prefill's token): what a step needs."""
    from mxwr.decoding import DecodingOptions, DecodingTask

    mel = np.zeros((model.batch, model.dims.n_mels, 3000), np.float32)
    ctx = model.encode(mel)
    decoder = DecodingTask(model, _special(model), DecodingOptions(without_timestamps=True))
    cache = model.new_cache()
    token = model.prefill(ctx, cache, np.array([PROMPT] * model.batch), 0, decoder.suppress_first).token
    return mel, ctx, decoder, cache, token


def _special(model):
    from mxwr.tokens import SpecialTokens

    return SpecialTokens.from_bundle(model.bundle)


def engine_openai_whisper(args) -> dict:
    import torch
    import whisper

    sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "compiler")]
    from mxwc.reference import openai_whisper_model

    clips = load_clips(Path(args.clips))
    memory = PeakMemory()
    model = openai_whisper_model(reference_weights(args.fp16)).cuda()
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=True)

    def transcribe(audio: np.ndarray):
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio).cuda()))
        result = model.decode(mel, options)
        return result

    def windows(audio: np.ndarray):
        """Every 30-second window decoded on its own, as mxw's decode_windows does."""
        return [transcribe(audio[s : s + 480_000]) for s in range(0, max(len(audio), 1), 480_000)]

    out: dict = {"engine": "openai-whisper", "torch": torch.__version__}
    results = {name: windows(a) for name, a in clips.items()}
    out["fp16_texts"] = {name: " ".join(r.text for r in rs if r.text) for name, rs in results.items()}
    out["fp16_tokens"] = {name: [t for r in rs for t in r.tokens] for name, rs in results.items()}
    jfk = clips["jfk_inaugural.wav"]
    out["e2e_s"] = median_time(lambda: transcribe(jfk))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(jfk).cuda())).half()[None]

    def encode():
        with torch.no_grad():
            model.encoder(mel)
        torch.cuda.synchronize()

    out["encoder_s"] = median_time(encode)
    n_tokens = len(out["fp16_tokens"]["jfk_inaugural.wav"]) + 1
    out["per_token_s"] = (out["e2e_s"] - out["encoder_s"]) / n_tokens

    windows = torch.from_numpy(np.stack(batch_windows(clips))).cuda()
    mels = whisper.log_mel_spectrogram(windows)
    model.decode(mels[:4], options)
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.decode(whisper.log_mel_spectrogram(windows), options)
    torch.cuda.synchronize()
    out["batch"] = N_WINDOWS
    out["batch_rtfx"] = N_WINDOWS * 30.0 / (time.perf_counter() - start)
    out["peak_mem_mib"] = memory.stop()
    return out


def _hf_state_dict(openai_state: dict) -> dict:
    """openai-whisper parameter names -> transformers' WhisperForConditionalGeneration names."""
    renames = [
        ("encoder.positional_embedding", "encoder.embed_positions.weight"),
        ("decoder.positional_embedding", "decoder.embed_positions.weight"),
        ("decoder.token_embedding", "decoder.embed_tokens"),
        ("encoder.ln_post", "encoder.layer_norm"), ("decoder.ln.", "decoder.layer_norm."),
        (".blocks.", ".layers."), (".cross_attn_ln.", ".encoder_attn_layer_norm."),
        (".cross_attn.", ".encoder_attn."), (".attn_ln.", ".self_attn_layer_norm."), (".attn.", ".self_attn."),
        (".query.", ".q_proj."), (".key.", ".k_proj."), (".value.", ".v_proj."), (".out.", ".out_proj."),
        (".mlp.0.", ".fc1."), (".mlp.2.", ".fc2."), (".mlp_ln.", ".final_layer_norm."),
    ]
    out = {}
    for name, value in openai_state.items():
        for old, new in renames:
            name = name.replace(old, new)
        out[f"model.{name}"] = value
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def engine_transformers(args) -> dict:
    import torch
    import transformers
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    sys.path[:0] = [str(ROOT / "runtime")]
    from mxwr.bundle import BundleReader
    from mxwr.mel import log_mel_spectrogram

    clips = load_clips(Path(args.clips))
    memory = PeakMemory()
    weights = reference_weights(args.fp16)
    d = weights.dims
    special = BundleReader(args.fp16).manifest.tokenizer.to_dict()
    config = WhisperConfig(
        vocab_size=d.n_vocab, num_mel_bins=d.n_mels, encoder_layers=d.n_audio_layer,
        encoder_attention_heads=d.n_audio_head, decoder_layers=d.n_text_layer,
        decoder_attention_heads=d.n_text_head, d_model=d.n_text_state, encoder_ffn_dim=4 * d.n_audio_state,
        decoder_ffn_dim=4 * d.n_text_state, max_source_positions=d.n_audio_ctx, max_target_positions=d.n_text_ctx,
        decoder_start_token_id=special["special"]["sot"], eos_token_id=special["special"]["eot"],
        pad_token_id=special["special"]["eot"], bos_token_id=special["special"]["eot"],
    )
    model = WhisperForConditionalGeneration(config)
    # openai-whisper's rules, through transformers' own processors: SuppressTokens ("-1") and
    # SuppressBlank at the first sampled position (after the 2-token prompt).
    gc = model.generation_config
    gc.suppress_tokens = sorted(set(special["non_speech_tokens"]) | {special["special"][k] for k in ("transcribe", "translate", "sot", "sot_prev", "sot_lm")})
    gc.begin_suppress_tokens = list(special["blank_tokens"]) + [special["special"]["eot"]]
    gc.forced_decoder_ids = None
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in weights.tensors.items()}
    missing, unexpected = model.load_state_dict(_hf_state_dict(state), strict=False)
    model = model.to("cuda", torch.float16).eval()
    model.config._attn_implementation = "sdpa"
    prompt = [special["special"]["sot"], special["special"]["no_timestamps"]]
    filters = np.array(BundleReader(args.fp16).read_tensors("mel_filters")["mel_filters"])
    out: dict = {"engine": "transformers", "version": transformers.__version__,
                 "missing_keys": [k for k in missing if "embed_positions" not in k], "unexpected_keys": list(unexpected)}

    def generate(audios: list[np.ndarray], static: bool):
        mel = np.stack([log_mel_spectrogram(np.pad(a, (0, max(0, 480_000 - len(a))))[:480_000], filters) for a in audios])
        features = torch.from_numpy(mel).to("cuda", torch.float16)
        decoder_input_ids = torch.tensor([prompt] * len(audios), device="cuda")
        kwargs = {"cache_implementation": "static"} if static else {}
        with torch.no_grad():
            # The generic generate: Whisper's own wraps it with long-form and language logic.
            ids = transformers.GenerationMixin.generate(
                model, input_features=features, decoder_input_ids=decoder_input_ids, do_sample=False,
                num_beams=1, max_new_tokens=d.n_text_ctx // 2, **kwargs,
            )
        return ids[:, len(prompt):]

    static = False
    try:
        if args.hf_no_compile:
            raise RuntimeError("torch.compile skipped (--hf-no-compile: the compiled run crashed)")
        model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
        generate([clips["jfk_inaugural.wav"]], static=True)
        static = True
    except Exception as e:  # report, and measure the plain path instead
        out["static_compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        model.forward = WhisperForConditionalGeneration.forward.__get__(model)
    out["static_cache_compiled"] = static
    tokens = {name: [int(t) for t in generate([a], static)[0].tolist() if t != special["special"]["eot"]] for name, a in clips.items()}
    out["fp16_tokens"] = tokens
    jfk = clips["jfk_inaugural.wav"]
    out["e2e_s"] = median_time(lambda: generate([jfk], static))
    features = torch.from_numpy(log_mel_spectrogram(np.pad(jfk, (0, 480_000 - len(jfk))), filters)[None]).to("cuda", torch.float16)

    def encode():
        with torch.no_grad():
            model.model.encoder(features)
        torch.cuda.synchronize()

    out["encoder_s"] = median_time(encode)
    out["per_token_s"] = (out["e2e_s"] - out["encoder_s"]) / (len(tokens["jfk_inaugural.wav"]) + 1)
    model.forward = WhisperForConditionalGeneration.forward.__get__(model)  # batch: the plain path
    windows = batch_windows(clips)
    generate(windows[:4], False)
    start = time.perf_counter()
    generate(windows, False)
    torch.cuda.synchronize()
    out["batch"] = N_WINDOWS
    out["batch_rtfx"] = N_WINDOWS * 30.0 / (time.perf_counter() - start)
    out["peak_mem_mib"] = memory.stop()
    return out


ENGINES = {"mxw": engine_mxw, "openai-whisper": engine_openai_whisper, "transformers": engine_transformers}


# ----------------------------------------------------------------------------------------------
# The run: every engine, then the table


def table(results: dict[str, dict], device: str) -> str:
    mxw, ow, hf = (results.get(k, {}) for k in ("mxw", "openai-whisper", "transformers"))

    def ms(x):
        return "—" if x is None else f"{x * 1e3:.2f}"

    rows = ["| engine | jfk end-to-end (ms) | encoder (ms) | decoder per token (ms) | batch RTFx (64 × 30 s) | peak GPU MiB |",
            "|---|---|---|---|---|---|"]
    for name, r in (("mxw (MAX, fp16)", mxw), ("openai-whisper (PyTorch fp16)", ow), ("transformers (fp16, SDPA)", hf)):
        if "error" in r or not r:
            rows.append(f"| {name} | failed: {r.get('error', 'not run')} | | | | |")
            continue
        per_token = r.get("per_token_s") or {int(p): t for p, t in r.get("step_s_by_position", {}).items()}.get(10)
        batch = f"{r['batch_rtfx']:.0f} (batch {r['batch']})" if "batch_rtfx" in r else "—"
        rows.append(f"| {name} | {ms(r['e2e_s'])} | {ms(r['encoder_s'])} | {ms(per_token)} | {batch} | {r['peak_mem_mib']:.0f} |")
    lines = [f"Device: {device}", "", *rows, ""]
    if mxw and "error" not in mxw:
        steps = {int(p): t for p, t in mxw["step_s_by_position"].items()}  # JSON keys are strings
        lines.append("mxw decoder step (token in, token out) by position: "
                     + ", ".join(f"{p}: {s * 1e3:.3f} ms" for p, s in steps.items()))
        floor = mxw["step_kernels"] * mxw["launch_latency_s"]
        lines.append(f"step(400) / step(10) = {steps[400] / steps[10]:.2f}; launch floor = {mxw['step_kernels']} kernels "
                     f"× {mxw['launch_latency_s'] * 1e6:.2f} µs = {floor * 1e3:.3f} ms; step(10) / floor = {steps[10] / floor:.2f}")
        if "step_eager_s" in mxw:
            eq = mxw["replay_tokens_equal_eager"]
            lines.append(f"device-graph replay: a step is {mxw['replayed_step_launches']} launch(es); 50 steps back to back "
                         f"{mxw['step_gpu_s'] * 1e3:.3f} ms/step. Without replay (every kernel from the host): jfk end-to-end "
                         f"{ms(mxw['e2e_eager_s'])} ms, step(10) {ms(mxw['step_eager_s'])} ms; tokens with and without "
                         f"replay equal on {sum(eq.values())}/{len(eq)} clips")
        if "e2e_phases_s" in mxw:
            phases = {**mxw["e2e_phases_s"], "encoder": mxw["encoder_s"]}
            rest = mxw["e2e_s"] - sum(phases.values())
            lines.append("mxw jfk end-to-end by phase (each run alone): "
                         + ", ".join(f"{k} {ms(v)} ms" for k, v in phases.items())
                         + f"; the decode loop and host work around it {ms(rest)} ms")
        for name, prof in mxw.get("kernel_profile", {}).items():
            top = "; ".join(f"{k} {us:.1f} µs ({n:g}×)" for k, us, n in prof["top"])
            lines.append(f"GPU time of one {name} run (sum of its {prof['kernels']:.0f} kernels' durations, CUPTI "
                         f"via torch.profiler): {prof['gpu_us']:.1f} µs; most: {top}")
        if ow and "e2e_s" in ow:
            lines.append(f"speed-up, jfk end-to-end: {ow['e2e_s'] / mxw['e2e_s']:.1f}× vs openai-whisper"
                         + (f", {hf['e2e_s'] / mxw['e2e_s']:.1f}× vs transformers" if hf and "e2e_s" in hf else ""))
        if "fp32_tokens_equal_cpu" in mxw:
            eq = mxw["fp32_tokens_equal_cpu"]
            lines.append(f"fp32 GPU tokens equal CPU tokens: {sum(eq.values())}/{len(eq)} clips")
        if ow and "fp16_tokens" in ow:
            same = sum(mxw["fp16_tokens"][k] == ow["fp16_tokens"][k] for k in ow["fp16_tokens"])
            texts = sum(mxw["fp16_texts"][k] == ow["fp16_texts"][k] for k in ow["fp16_texts"])
            lines.append(f"fp16 vs openai-whisper fp16: transcripts equal {texts}/{len(ow['fp16_texts'])}, "
                         f"tokens equal {same}/{len(ow['fp16_tokens'])} clips")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp16", required=True, help="bundle with a GPU fp16 target, batch 1")
    parser.add_argument("--fp32", help="bundle with a GPU fp32 target, batch 1 (parity with the CPU)")
    parser.add_argument("--batch-bundle", help="bundle with a GPU fp16 target built with --batch N")
    parser.add_argument("--clips", required=True, help="folder of the dev .wav clips")
    parser.add_argument("--expected-cpu", help="JSON {clip: CPU tokens} made with mxwr run on the CPU")
    parser.add_argument("--engines", default="mxw,openai-whisper,transformers")
    parser.add_argument("--engine-timeout", type=int, default=240, help="seconds per engine")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: run one engine, print JSON
    parser.add_argument("--hf-no-compile", action="store_true", help="transformers without torch.compile")
    parser.add_argument("--out", default="bench_gpu.json")
    parser.add_argument("--markdown", default="bench_gpu.md")
    args = parser.parse_args()

    if args.engine:
        print("RESULT " + json.dumps(ENGINES[args.engine](args)))
        return

    results = {}
    logs = Path(args.out).parent
    attempts = [(e, []) for e in args.engines.split(",")]
    for engine, extra in attempts:
        log = logs / f"engine-{engine}{'-retry' if extra else ''}.log"  # its whole stderr
        with open(log, "w") as err:
            try:
                proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], *extra, "--engine", engine],
                                      stdout=subprocess.PIPE, stderr=err, text=True, timeout=args.engine_timeout)
            except subprocess.TimeoutExpired:
                results[engine] = {"error": f"timed out after {args.engine_timeout} s"}
                print(f"{engine} timed out (log: {log})", file=sys.stderr)
                continue
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            lines = log.read_text().strip().splitlines()
            errors = [l for l in lines if re.match(r"^\w*(Error|Exception)\b", l)] or lines[-1:] or ["no output"]
            results[engine] = {"error": f"exit code {proc.returncode}: {errors[-1][:300]}"}
            print(f"{engine} failed: {results[engine]['error']} (log: {log})", file=sys.stderr)
            if engine == "transformers" and not extra:  # once more, without torch.compile
                attempts.append((engine, ["--hf-no-compile"]))
        else:
            results[engine] = json.loads(line[len("RESULT "):])
    import torch

    device = torch.cuda.get_device_name(0)
    Path(args.out).write_text(json.dumps(results, indent=1))
    text = table(results, device)
    Path(args.markdown).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
