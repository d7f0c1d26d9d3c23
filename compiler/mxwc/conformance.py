"""Per-graph numerical comparison of a bundle against openai-whisper on the bundle's own weights.

When a transcript differs, this says which graph moved: log-mel (numpy front end), encoder
(features and cross-attention K/V), prefill (first-step logits), step (logits along the
reference's own token sequence), group_step (the same for every sequence of a window, after
fork), the graphs' summary of the text tokens against the logits they gave, align (the
alignment heads' cross-attention scores and the token probabilities word timestamps use), and
finally the tokens themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mxwr.bundle import BundleReader
from mxwr.quantization import SCALE, weight_encodings, widened

from . import kquants
from .weights import ModelWeights


@dataclass(frozen=True)
class Limits:
    """How far each graph may be from openai-whisper on the bundle's own (widened) weights."""

    rel: float  # the encoder's features and cross K/V, the alignment heads' scores: relative error
    logits: float  # the decoders' logits: max |diff|
    probs: float  # the align graph's token probabilities: max |diff|


MEL_MAX_ABS = 1e-3
# By the target's `quantization` (fp32, CPU). An int8 target's products round their inputs to 8
# bits too (kernels/vnni.mojo): each group of 64 values of a row to 1/254 of its largest,
# compounding over the encoder's layers. A K-quant target's decoder products (MAX's qmatmul)
# round theirs per 256 values, coarser, so its logits may move further.
_INT8 = Limits(rel=5e-2, logits=1.0, probs=5e-2)
_KQUANT = Limits(rel=5e-2, logits=2.0, probs=5e-2)
LIMITS = {"none": Limits(rel=1e-4, logits=1e-3, probs=1e-4), "int8": _INT8, "q4_k": _KQUANT, "q6_k": _KQUANT}
SUMMARY_MAX_ABS = 1e-4  # float32 log-sum-exp of ~50k terms, summed in float64 on both sides


@dataclass
class Row:
    graph: str
    metric: str
    value: float
    threshold: float | None

    @property
    def ok(self) -> bool:
        return self.threshold is None or self.value <= self.threshold


def weights_from_bundle(reader: BundleReader, target: str = "cpu") -> ModelWeights:
    """The bundle's weights as a ModelWeights (fp32), so the reference runs on exactly them: int8
    weights as their scales times their integers, K-quant blocks unpacked."""
    m = reader.manifest
    entry = next(t for t in m.targets if t.name == target)
    stored = reader.read_tensors(entry.weights_section)
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in stored.items() if not k.endswith(SCALE)}
    for name, encoding in weight_encodings(m.dims, entry.quantization).items():
        if encoding == "int8":
            tensors[name] = widened(stored[name], np.asarray(stored[name + SCALE], dtype=np.float32))
        else:
            tensors[name] = kquants.unpack(np.asarray(stored[name]), encoding, m.dims.weight_shapes()[name][1])
    heads = [list(h) for h in m.alignment_heads] if m.alignment_heads is not None else None
    return ModelWeights(m.model.name, m.dims, tensors, f"bundle {reader.path}", heads)


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def compare(bundle: str | Path, audio_path: str | Path, language: str | None = None,
            reference: ModelWeights | None = None) -> list[Row]:
    """Each graph of the bundle against openai-whisper on the bundle's weights, within the limits.
    `reference`: openai-whisper on these weights instead (a quantized bundle's float32
    originals): the rows then say how far the bundle is from them, with no limits."""
    import torch
    import whisper

    from mxwr.audio import load_audio
    from mxwr.decoding import DecodingOptions, DecodingTask
    from mxwr.transcribe import Transcriber

    from .reference import openai_whisper_model

    t = Transcriber(bundle, device="cpu")
    ref = openai_whisper_model(reference or weights_from_bundle(t.bundle))
    dims = t.model.dims
    limits = LIMITS[t.model.target.quantization]
    rows: list[Row] = []
    audio = load_audio(audio_path)
    ref_mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)), n_mels=dims.n_mels)
    mel = t.mel(audio)
    rows.append(Row("mel", "max |diff|", float(np.abs(mel - ref_mel.numpy()).max()), MEL_MAX_ABS))
    if t.model.has("frontend"):
        windows = np.repeat(whisper.pad_or_trim(audio)[None], t.model.batch, axis=0)
        device_mel = t.model.log_mel(windows).to_numpy()[0]
        rows.append(Row("frontend", "device log-mel max |diff|", float(np.abs(device_mel - ref_mel.numpy()).max()), MEL_MAX_ABS))

    # Feed both models the same (reference) mel so each graph is judged on its own.
    batch = np.repeat(ref_mel.numpy()[None], t.model.batch, axis=0)
    ctx = t.model.encode(batch)
    with torch.no_grad():
        ref_features = ref.encoder(ref_mel[None])
        rows.append(Row("encoder", "features rel err", rel_err(ctx.features.to_numpy()[0], ref_features[0].numpy()), limits.rel))
        scale = (dims.n_text_state // dims.n_text_head) ** -0.25
        k_err = v_err = 0.0
        for i, block in enumerate(ref.decoder.blocks):
            k = block.cross_attn.key(ref_features)[0].view(-1, dims.n_text_head, dims.n_text_state // dims.n_text_head)
            v = block.cross_attn.value(ref_features)[0].view(-1, dims.n_text_head, dims.n_text_state // dims.n_text_head)
            k_err = max(k_err, rel_err(ctx.cross_k.to_numpy()[i, 0], (k * scale).permute(1, 0, 2).numpy()))
            v_err = max(v_err, rel_err(ctx.cross_v.to_numpy()[i, 0], v.permute(1, 0, 2).numpy()))
        rows.append(Row("encoder", "cross K rel err", k_err, limits.rel))
        rows.append(Row("encoder", "cross V rel err", v_err, limits.rel))

    options = whisper.DecodingOptions(language=language or ("en" if not dims.is_multilingual else None),
                                      without_timestamps=True, temperature=0, fp16=False)
    expected = ref.decode(ref_mel, options)
    special = t.special
    prompt = special.sot_sequence(expected.language, "transcribe") + [special.no_timestamps]
    sequence = prompt + list(expected.tokens)

    # Prefill: first-step logits on the prompt.
    cache = t.model.new_cache()
    unmasked = t.model.suppress_mask([])
    tokens = np.array([prompt] * t.model.batch, dtype=np.int64)
    first = t.model.prefill(ctx, cache, tokens, 0, unmasked).logits.to_numpy()[0, 0]
    with torch.no_grad():
        ref_logits = ref.decoder(torch.tensor([sequence]), ref_features)[0].numpy()
    rows.append(Row("prefill", "first-step logits max |diff|", float(np.abs(first - ref_logits[len(prompt) - 1]).max()), limits.logits))

    # Step: teacher-forced along the reference's tokens, every position compared.
    worst, summary = 0.0, 0.0
    text_end = special.eot
    if t.model.has("group_step"):  # every sequence of the window from the same prompt
        group_cache = t.model.new_cache("group_step")
        t.model.fork(cache, group_cache, len(prompt))
    for pos in range(len(prompt), len(sequence)):
        token = np.full(t.model.batch, sequence[pos], dtype=np.int64)
        out = t.model.step(ctx, cache, token, pos, unmasked)
        logits = out.logits.to_numpy()[0]
        worst = max(worst, float(np.abs(logits - ref_logits[pos]).max()))
        if out.text_summary is not None:
            summary = max(summary, _summary_error(out, text_end))
    rows.append(Row("step", f"logits max |diff| over {len(sequence) - len(prompt)} steps", worst, limits.logits))
    if t.model.has("group_step"):
        worst = 0.0
        for pos in range(len(prompt), len(sequence)):
            token = np.full(t.model.rows, sequence[pos], dtype=np.int64)
            out = t.model.step(ctx, group_cache, token, pos, unmasked, role="group_step")
            worst = max(worst, float(np.abs(out.logits.to_numpy() - ref_logits[pos]).max()))
            summary = max(summary, _summary_error(out, text_end))
        rows.append(Row("group_step", f"logits max |diff|, {t.model.rows} sequences", worst, limits.logits))
    if t.model.text_summary:
        rows.append(Row("summary", "text top-k and log-sum-exp vs its logits, max |diff|", summary, SUMMARY_MAX_ABS))

    if t.model.has("align"):
        rows += _align_rows(t, ref, ctx, ref_features, sequence + [special.eot], len(prompt) - 1, limits)

    # End to end: the tokens of our own greedy loop on our own mel.
    options = DecodingOptions(language=expected.language, without_timestamps=True)
    ours = DecodingTask(t.model, special, options).run(t.model.encode(np.repeat(mel[None], t.model.batch, axis=0)))[0]
    rows.append(Row("tokens", "mismatched tokens vs openai-whisper", float(_mismatches(ours.tokens, list(expected.tokens))), 0.0))
    return rows if reference is None else [replace(r, threshold=None) for r in rows]


def _summary_error(out, text_end: int) -> float:
    """How far a decoder graph's text summary (unmasked) is from its own logits: the best ids
    must be numpy's (stable, largest first), their logits and the log-sum-exp within float32."""
    from mxwr.scores import logsumexp

    logits = out.logits.to_numpy().reshape(-1, out.logits.shape[-1])[:, :text_end]
    ids, values, lse = (b.to_numpy() for b in out.text_summary)
    ids, values, lse = ids.reshape(len(logits), -1), values.reshape(len(logits), -1), lse.reshape(len(logits))
    error = 0.0
    for row, x in enumerate(logits):
        expected = np.argsort(-x, kind="stable")[: ids.shape[1]]
        if ids[row].tolist() != expected.tolist():
            return float("inf")
        error = max(error, float(np.abs(values[row] - x[expected]).max()), abs(float(lse[row]) - float(logsumexp(x))))
    return error


def _align_rows(t, ref, ctx, ref_features, sequence: list[int], sot_len: int, limits: Limits) -> list[Row]:
    """The align graph on [*sot_sequence, no_timestamps, *text, eot] vs openai-whisper's forward
    with hooks on the alignment heads' cross-attention, as its `find_alignment` runs it."""
    import torch
    from whisper.model import disable_sdpa

    captured: dict[int, torch.Tensor] = {}
    hooks = [block.cross_attn.register_forward_hook(lambda _m, _i, out, i=i: captured.__setitem__(i, out[-1][0]))
             for i, block in enumerate(ref.decoder.blocks)]
    try:
        with torch.no_grad(), disable_sdpa():  # SDPA returns no scores
            logits = ref.decoder(torch.tensor([sequence]), ref_features)[0]
    finally:
        for h in hooks:
            h.remove()
    ref_scores = torch.stack([captured[layer][head] for layer, head in t.model.alignment_heads]).numpy()
    text = sequence[sot_len + 1 : -1]
    probs = logits[sot_len : sot_len + len(text), : t.special.eot].float().softmax(-1)
    ref_probs = probs[np.arange(len(text)), text].numpy()
    scores, token_probs = t.model.align(ctx, sequence)
    return [
        Row("align", "alignment-head scores rel err", rel_err(scores, ref_scores), limits.rel),
        Row("align", "text token probs max |diff|", float(np.abs(token_probs[sot_len : sot_len + len(text)] - ref_probs).max()),
            limits.probs),
    ]


def _mismatches(a: list[int], b: list[int]) -> int:
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def format_table(rows: list[Row]) -> str:
    lines = [f"{'graph':<8} {'metric':<44} {'value':>11} {'limit':>9}  ok"]
    for r in rows:
        limit = "" if r.threshold is None else f"{r.threshold:.0e}"
        lines.append(f"{r.graph:<8} {r.metric:<44} {r.value:>11.3e} {limit:>9}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)
