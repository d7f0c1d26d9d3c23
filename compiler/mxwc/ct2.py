"""Reads a CTranslate2 Whisper model (faster-whisper's format) into openai-whisper's state dict.

`model.bin` (binary version >= 5) is: version, spec name, spec revision, then named tensors
(rank, dims, dtype id, byte count, data) and finally aliases. The Whisper spec fuses attention
projections — self-attention `linear_0` is [q; k; v], cross-attention `linear_0` is q and
`linear_1` is [k; v] — with a zero key bias that openai-whisper does not have; the output
projection is an alias of the token embedding. A model may be split into `model.bin.part1`,
`.part2`, ... possibly shipped by different packages; the parts are concatenated in order.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from mxwr.dims import ModelDims

# CTranslate2's DataType enum.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class CT2FormatError(ValueError):
    pass


def is_ct2_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "model.bin").is_file() or (path / "model.bin.part1").is_file()
    )


def find_parts(model_dir: Path) -> list[Path]:
    """model.bin, or model.bin.part1..N found beside it or in sibling package folders.

    Split packages install side by side (site-packages/pkg_part1/data, pkg_part2/data), so a
    missing part is looked for under the same relative folder in the siblings of the
    package folder.
    """
    if (model_dir / "model.bin").is_file():
        return [model_dir / "model.bin"]
    parts = [model_dir / "model.bin.part1"]
    rel = model_dir.name
    roots = [model_dir.parent.parent]
    n = 2
    while True:
        name = f"model.bin.part{n}"
        candidates = [model_dir / name] + sorted(roots[0].glob(f"*/{rel}/{name}"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            break
        parts.append(found)
        n += 1
    return parts


def read_model_bin(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """Parses model.bin bytes into (spec name, {variable name: array}), aliases resolved."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise CT2FormatError("model.bin is truncated (is a part missing?)")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        n = take("<H")
        if pos + n > len(data):
            raise CT2FormatError("model.bin is truncated (is a part missing?)")
        s = data[pos : pos + n].rstrip(b"\0").decode("utf-8")
        pos += n
        return s

    version = take("<I")
    if version < 5:
        raise CT2FormatError(f"unsupported CTranslate2 model.bin version {version}")
    spec = string()
    take("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        rank = take("<B")
        shape = [take("<I") for _ in range(rank)]
        dtype_id = take("<B")
        nbytes = take("<I")
        if dtype_id not in _DTYPES:
            raise CT2FormatError(f"tensor {name}: unsupported dtype id {dtype_id}")
        if pos + nbytes > len(data):
            raise CT2FormatError("model.bin is truncated (is a part missing?)")
        array = np.frombuffer(data, dtype=_DTYPES[dtype_id], count=nbytes // np.dtype(_DTYPES[dtype_id]).itemsize, offset=pos)
        variables[name] = array.reshape(shape)
        pos += nbytes
    for _ in range(take("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(data):
        raise CT2FormatError(f"model.bin has {len(data) - pos} unexpected trailing bytes")
    return spec, variables


def _layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    found = {int(m.group(1)) for k in variables if (m := re.match(rf"{prefix}/layer_(\d+)/", k))}
    return len(found)


def to_openai_state_dict(variables: dict[str, np.ndarray]) -> tuple[ModelDims, dict[str, np.ndarray]]:
    """Maps CTranslate2 Whisper variables to openai-whisper's names, shapes and split q/k/v."""
    v = variables
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def split(dst_names: list[str], src: str) -> None:
        weights = np.split(v[f"{src}/weight"], len(dst_names), axis=0)
        biases = np.split(v[f"{src}/bias"], len(dst_names), axis=0)
        for dst, w, b in zip(dst_names, weights, biases):
            sd[f"{dst}.weight"] = w
            if not dst.endswith(".key"):  # the key projection has no bias (CT2 stores zeros)
                sd[f"{dst}.bias"] = b

    def block(dst: str, src: str, cross: bool) -> None:
        """One residual block: self-attention, (cross-attention,) MLP."""
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    n_audio_layer = _layers(v, "encoder")
    n_text_layer = _layers(v, "decoder")
    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    conv1 = v["encoder/conv1/weight"]
    token_embedding = v["decoder/embeddings/weight"]
    dims = ModelDims(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(v["encoder/position_encodings/encodings"].shape[0]),
        n_audio_state=int(conv1.shape[0]),
        n_audio_head=int(v["encoder/num_heads"]),
        n_audio_layer=n_audio_layer,
        n_vocab=int(token_embedding.shape[0]),
        n_text_ctx=int(v["decoder/position_encodings/encodings"].shape[0]),
        n_text_state=int(token_embedding.shape[1]),
        n_text_head=int(v["decoder/num_heads"]),
        n_text_layer=n_text_layer,
    )
    return dims, sd


def load_ct2_dir(model_dir: Path) -> tuple[ModelDims, dict[str, np.ndarray], list[list[int]] | None, list[Path]]:
    """(dims, openai-whisper state dict, alignment heads from config.json, the files read)."""
    parts = find_parts(model_dir)
    data = b"".join(p.read_bytes() for p in parts)
    spec, variables = read_model_bin(data)
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{model_dir} holds a {spec}, not a Whisper model")
    dims, sd = to_openai_state_dict(variables)
    heads = None
    config = model_dir / "config.json"
    if config.is_file():
        heads = json.loads(config.read_text()).get("alignment_heads")
    return dims, sd, heads, parts
