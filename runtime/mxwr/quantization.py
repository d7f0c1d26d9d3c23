"""How a target's weights are stored: the manifest's `quantization`, and the tensors it implies.

- `none`: every tensor of openai-whisper's state dict in the target's compute dtype.
- `int8` (float32 CPU targets): the attention and MLP matrices of the encoder and the decoder
  (but the cross-attention key/value projections, whose products every decoder step attends
  over: int8 there moved dev clips' words) and the token embedding (the tied logits), as int8
  in groups of GROUP consecutive weights of a row, each group scaled by its own float32 factor,
  stored as `<name>.scale` [rows, cols / GROUP]: w[i, j] ≈ scale[i, j // GROUP] * q[i, j], with
  the scale the group's largest |w| / 127 and q rounded to the nearest integer (one scale per
  row moved dev clips' words). Everything else (those projections, the convolutions, biases,
  layer norms, positional embeddings) stays float32. The graphs round the activations of each
  product to 8 bits in the same groups, so that each group's products are one instruction of
  the CPU's 8-bit dot products (kernels/vnni.mojo).
- `q4_k`, `q6_k` (float32 CPU targets): the decoder's matrices in GGUF's K-quant blocks
  (llama.cpp's Q4_K and Q6_K, which MAX's `qmatmul` multiplies); `q4_k` keeps the
  self-attention value and second MLP matrices in Q6_K, as llama.cpp's Q4_K_M mix does (all in
  Q4_K moved dev clips' greedy words). The token embedding and the encoder's matrices are int8
  as above: the decoder's matrices are the bytes every step reads; the embedding is read every
  step by our int8 logits kernel, which picks the greedy token and summarizes the text tokens
  in the same pass, and in Q4_K it moved dev clips' words (llama.cpp's mixes too keep their
  output matrix at more bits; Q6_K rows padded to 512 are no smaller than int8's); the encoder
  is bound by arithmetic, not bytes, and 4-bit weights there moved its features many times
  further than int8 does. A row of `cols` weights is padded with zeros to a whole number of
  KQUANT_VALUES-weight blocks and stored as uint8 [rows, blocks * block bytes]; tiny's
  384-wide rows take two blocks, a third of them padding. The graphs pad the activations
  alike; MAX rounds them to 8 bits per block (its largest |x| at 127).

The decoder step reads every weight once per token, so its time is the weights' bytes over the
memory's bandwidth; the encoder's products are bounded by arithmetic, which 8-bit dot products
do four times as much of per instruction as float32 ones.
"""

from __future__ import annotations

import numpy as np

from .dims import ModelDims

SCHEMES = ("none", "int8", "q4_k", "q6_k")
SCALE = ".scale"  # suffix of an int8 weight's scales
INT8_MAX = 127
GROUP = 64  # weights of a row per scale
KQUANT_VALUES = 256  # weights of a row per K-quant block
KQUANT_BLOCK_BYTES = {"q4_k": 144, "q6_k": 210}  # GGUF's block_q4_K, block_q6_K
EMBEDDING = "decoder.token_embedding.weight"
Q4_K_MORE_BITS = (".attn.value.weight", ".mlp.2.weight")  # a q4_k target's decoder matrices in Q6_K


def quantized_weights(dims: ModelDims) -> tuple[str, ...]:
    """The state-dict names a quantized target stores quantized: the token embedding and every
    linear's matrix but the cross-attention key/value projections'."""
    names = [EMBEDDING]
    for i in range(dims.n_audio_layer):
        block = f"encoder.blocks.{i}"
        names += [f"{block}.attn.{p}.weight" for p in ("query", "key", "value", "out")]
        names += [f"{block}.mlp.0.weight", f"{block}.mlp.2.weight"]
    for i in range(dims.n_text_layer):
        block = f"decoder.blocks.{i}"
        names += [f"{block}.attn.{p}.weight" for p in ("query", "key", "value", "out")]
        names += [f"{block}.cross_attn.{p}.weight" for p in ("query", "out")]
        names += [f"{block}.mlp.0.weight", f"{block}.mlp.2.weight"]
    return tuple(names)


def weight_encodings(dims: ModelDims, scheme: str) -> dict[str, str]:
    """name -> how a target of `scheme` stores it (`int8`, `q4_k`, `q6_k`), for its quantized
    weights; the others are stored in the compute dtype."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}")
    if scheme == "none":
        return {}

    def encoding(name: str) -> str:
        if scheme == "int8" or not name.startswith("decoder.blocks."):
            return "int8"
        if scheme == "q4_k" and name.endswith(Q4_K_MORE_BITS):
            return "q6_k"
        return scheme

    return {name: encoding(name) for name in quantized_weights(dims)}


def kquant_width(cols: int, encoding: str) -> int:
    """Bytes of a row of `cols` weights in K-quant blocks, zero-padded to whole blocks."""
    return -(-cols // KQUANT_VALUES) * KQUANT_BLOCK_BYTES[encoding]


def quantized_tensors(name: str, shape: tuple[int, ...], encoding: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of the tensors that store weight `name` [rows, cols] by `encoding`
    (int8: every row a whole number of groups, as whisper's widths are)."""
    rows, cols = shape
    if encoding == "int8":
        return {name: ("int8", (rows, cols)), name + SCALE: ("float32", (rows, cols // GROUP))}
    return {name: ("uint8", (rows, kquant_width(cols, encoding)))}


def stored_tensors(dims: ModelDims, dtype: str, scheme: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in the weights section of a target computing in
    `dtype` with weights stored by `scheme`."""
    shapes = dims.weight_shapes()
    tensors = {name: (dtype, shape) for name, shape in shapes.items()}
    for name, encoding in weight_encodings(dims, scheme).items():
        tensors.update(quantized_tensors(name, shapes[name], encoding))
    return tensors


def widened(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """An int8 weight [rows, cols] with its scales [rows, cols / GROUP] as the float32 weight it
    stands for."""
    rows, cols = q.shape
    return (q.reshape(rows, cols // GROUP, GROUP).astype(np.float32) * scale[:, :, None]).reshape(rows, cols)
