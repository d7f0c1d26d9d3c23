"""How a target's weights are stored: the manifest's `quantization`, and the tensors it implies.

- `none`: every tensor of openai-whisper's state dict in the target's compute dtype.
- `int8` (float32 CPU targets): the attention and MLP matrices of the encoder and the decoder
  (but the cross-attention key/value projections, whose products every decoder step attends
  over: int8 there moved dev clips' words) and the token embedding (the tied logits), as int8 in groups of GROUP consecutive weights of a row, each
  group scaled by its own float32 factor, stored as `<name>.scale` [rows, cols / GROUP]:
  w[i, j] ≈ scale[i, j // GROUP] * q[i, j], with the scale the group's largest |w| / 127 and q
  rounded to the nearest integer (one scale per row moved dev clips' words). Everything else
  (those projections, the convolutions, biases, layer norms, positional embeddings) stays
  float32. The graphs
  round the activations of each product to 8 bits in the same groups, so that each group's
  products are one instruction of the CPU's 8-bit dot products (kernels/vnni.mojo).

The decoder step reads every weight once per token, so its time is the weights' bytes over the
memory's bandwidth; the encoder's products are bounded by arithmetic, which 8-bit dot products
do four times as much of per instruction as float32 ones.
"""

from __future__ import annotations

import numpy as np

from .dims import ModelDims

SCHEMES = ("none", "int8")
SCALE = ".scale"  # suffix of a quantized weight's scales
INT8_MAX = 127
GROUP = 64  # weights of a row per scale


def int8_weights(dims: ModelDims) -> tuple[str, ...]:
    """The state-dict names an int8 target stores as int8: every linear's matrix and the token
    embedding."""
    names = ["decoder.token_embedding.weight"]
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


def stored_tensors(dims: ModelDims, dtype: str, scheme: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in the weights section of a target computing in
    `dtype` with weights stored by `scheme` (int8: every quantized row a whole number of groups,
    as whisper's widths are)."""
    shapes = dims.weight_shapes()
    tensors = {name: (dtype, shape) for name, shape in shapes.items()}
    if scheme == "int8":
        for name in int8_weights(dims):
            tensors[name] = ("int8", shapes[name])
            rows, cols = shapes[name]
            tensors[name + SCALE] = ("float32", (rows, cols // GROUP))
    elif scheme != "none":
        raise ValueError(f"unknown quantization {scheme!r}")
    return tensors


def widened(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """An int8 weight [rows, cols] with its scales [rows, cols / GROUP] as the float32 weight it
    stands for."""
    rows, cols = q.shape
    return (q.reshape(rows, cols // GROUP, GROUP).astype(np.float32) * scale[:, :, None]).reshape(rows, cols)
