"""The layers of openai-whisper's `model.py`, on graph weights named as in its state dict.

Weights keep openai-whisper's layout (linear weights [out, in], conv weights [out, in, k]) and
are bound at load time, so one compiled graph serves every checkpoint of the same shape.
LayerNorm runs in fp32 whatever the model dtype; GELU is the exact (erf) one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from max.dtype import DType
from max.graph import DeviceRef, Graph, TensorValue, Weight, ops
from max.graph.quantization import QuantizationEncoding

from mxwr.quantization import GROUP, KQUANT_VALUES, SCALE, quantized_tensors

from .kernels import int8_linear, small_linear, small_products_fit

LN_EPS = 1e-5


class Params:
    """Hands out graph weights by state-dict name, with the shapes of the weights to be bound.

    `tile` is the target layout's (`Layout.tile`): products with the weights follow it
    (`times_weight`). `encodings`: how the quantized names are stored (`mxwr.quantization`):
    `int8` with their groups' scales, which `linear`, `embed` and the logits multiply by our
    kernel or widen; `q4_k`/`q6_k` in K-quant blocks (`linear`). `small_products`:
    the layout's own kernels multiply a few rows by float32 weights (`Layout.cpu_kernels`).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], dtype: DType, device: DeviceRef,
                 tile: int | None = None, encodings: Mapping[str, str] | None = None, small_products: bool = False):
        self._shapes = shapes
        self._dtype = dtype
        self._device = device
        self.tile = tile
        self._encodings = dict(encodings or {})
        self._stored = {stored: (DType[dtype], shape) for name, encoding in self._encodings.items()
                        for stored, (dtype, shape) in quantized_tensors(name, shapes[name], encoding).items()}
        self.small_products = small_products
        self._values: dict[str, TensorValue] = {}

    def __call__(self, name: str) -> TensorValue:
        if name not in self._values:
            dtype, shape = self._stored.get(name) or (self._dtype, self._shapes[name])
            self._values[name] = Graph.current.add_weight(Weight(name, dtype, shape, self._device))
        return self._values[name]

    @property
    def device(self) -> DeviceRef:
        return self._device

    def encoding(self, name: str) -> str | None:
        """How a quantized weight is stored (`int8`, `q4_k`, `q6_k`); None for the others."""
        return self._encodings.get(name)

    def widened(self, name: str) -> TensorValue:
        """The weight in the compute dtype: an int8 one times its groups' scales, K-quant blocks
        unpacked (their padding dropped)."""
        encoding = self.encoding(name)
        if encoding is None:
            return self(name)
        if encoding == "int8":
            return scaled(ops.cast(self(name), DType.float32), self(name + SCALE))
        cols = self._shapes[name][1]
        return ops.dequantize(QuantizationEncoding[encoding.upper()], self(name))[:, :cols]


def linear(p: Params, name: str, x: TensorValue, bias: bool = True) -> TensorValue:
    weight = f"{name}.weight"
    rows = int(np.prod([int(d) for d in x.shape[:-1]]))
    encoding = p.encoding(weight)
    if encoding == "int8":
        return int8_linear(x, p(weight), p(weight + SCALE), _bias(p, name, bias))
    if encoding is not None:
        y = kquant_linear(x, p(weight), encoding)
    elif p.small_products and small_products_fit(rows):
        return small_linear(x, p(weight), _bias(p, name, bias))
    else:
        y = times_weight(x, ops.transpose(p.widened(weight), 0, 1), p.tile)
    return y + p(f"{name}.bias") if bias else y


def kquant_linear(x: TensorValue, weight: TensorValue, encoding: str) -> TensorValue:
    """x [..., k] float32 times K-quant blocks [n, blocks * bytes] (rows of k weights padded to
    whole blocks) transposed -> [..., n]: x padded with zeros alike, MAX's `qmatmul` (which
    rounds x to 8 bits per block)."""
    lead, k = [int(d) for d in x.shape[:-1]], int(x.shape[-1])
    flat = ops.reshape(x, [int(np.prod(lead)), k])
    pad = -k % KQUANT_VALUES
    if pad:
        zeros = ops.constant(np.zeros((int(flat.shape[0]), pad), np.float32), DType.float32, x.device)
        flat = ops.concat([flat, zeros], axis=1)
    y = ops.qmatmul(QuantizationEncoding[encoding.upper()], None, flat, weight)
    return ops.reshape(y, [*lead, int(weight.shape[0])])


def _bias(p: Params, name: str, bias: bool) -> TensorValue:
    """The layer's bias, or zeros for one without (the key projection), for our kernels."""
    if bias:
        return p(f"{name}.bias")
    n = int(p(f"{name}.weight").shape[0])
    return ops.constant(np.zeros(n, np.float32), DType.float32, p.device)


def scaled(w: TensorValue, scale: TensorValue) -> TensorValue:
    """w [..., cols] float32 times its groups' scales [..., cols / GROUP]."""
    lead, cols = [int(d) for d in w.shape[:-1]], int(w.shape[-1])
    groups = ops.reshape(w, [*lead, cols // GROUP, GROUP]) * ops.unsqueeze(scale, -1)
    return ops.reshape(groups, [*lead, cols])


def embed(p: Params, name: str, ids: TensorValue) -> TensorValue:
    """Rows `ids` of an embedding (an int8 one widened, only those rows)."""
    rows = ops.gather(p(name), ids, axis=0)
    if p.encoding(name) is None:
        return rows
    if p.encoding(name) != "int8":
        raise ValueError(f"{name}: an embedding is stored as int8 or in the compute dtype, not {p.encoding(name)}")
    return scaled(ops.cast(rows, DType.float32), ops.gather(p(name + SCALE), ids, axis=0))


def times_weight(x: TensorValue, w: TensorValue, tile: int | None = None) -> TensorValue:
    """x [..., K] @ w [K, N].

    With a `tile` (16-bit GPU targets) a product of several rows runs as a batch of two halves
    against two copies of w: MAX 26.7 hands a 16-bit matmul on NVIDIA to cuBLAS, and each such
    call first zero-fills a 32 MiB workspace, slower than the matmul itself, with the bias a
    kernel of its own; its batched matmul runs its own tensor-core kernel with the bias and GELU
    fused in. The copy of w costs one small kernel. One row (the step) keeps the plain product,
    which MAX runs as a gemv.
    """
    rows = int(np.prod([int(d) for d in x.shape[:-1]]))
    k, n = (int(d) for d in w.shape)
    # The batched tiled kernel's own conditions (N a multiple of the tile, K of 32 and >= the tile).
    tiled = tile is not None and n % tile == 0 and k % 32 == 0 and k >= tile
    if not tiled or rows < 2 or rows % 2:
        return x @ w
    pair = ops.concat([ops.unsqueeze(w, 0), ops.unsqueeze(w, 0)], axis=0)
    y = ops.reshape(x, [2, rows // 2, k]) @ pair
    return ops.reshape(y, [*(int(d) for d in x.shape[:-1]), n])


def layer_norm(p: Params, name: str, x: TensorValue) -> TensorValue:
    gamma = ops.cast(p(f"{name}.weight"), DType.float32)
    beta = ops.cast(p(f"{name}.bias"), DType.float32)
    return ops.cast(ops.layer_norm(ops.cast(x, DType.float32), gamma, beta, LN_EPS), x.dtype)


def conv1d(p: Params, name: str, x: TensorValue, stride: int) -> TensorValue:
    """Kernel-3, padding-1 conv on channels-last x [B, T, C_in] -> [B, T / stride, C_out]."""
    weight = p(f"{name}.weight")  # [C_out, C_in, 3]
    if x.device != DeviceRef.CPU():
        return conv1d_as_matmul(weight, x, stride, p.tile) + p(f"{name}.bias")
    rscf = ops.unsqueeze(ops.permute(weight, [2, 1, 0]), 0)  # [1, 3, C_in, C_out]
    y = ops.conv2d(ops.unsqueeze(x, 1), rscf, stride=(1, stride), padding=(0, 0, 1, 1))
    return ops.squeeze(y, 1) + p(f"{name}.bias")


def conv1d_as_matmul(weight: TensorValue, x: TensorValue, stride: int, tile: int | None = None) -> TensorValue:
    """The same conv as one matmul over the three shifted copies of x (im2col): on GPUs MAX's
    direct conv kernel is an order of magnitude slower than its matmul for these shapes."""
    b, t, c = (int(d) for d in x.shape)
    zeros = ops.constant(np.zeros((b, 1, c), np.float32), DType.float32, x.device).cast(x.dtype)
    padded = ops.concat([zeros, x, zeros], axis=1)  # [B, T + 2, C_in]
    taps = ops.concat([padded[:, k : k + t, :] for k in range(3)], axis=-1)  # [B, T, 3 C_in]
    if stride > 1:
        taps = ops.reshape(taps, [b, t // stride, stride, 3 * c])[:, :, 0, :]
    kernel = ops.reshape(ops.permute(weight, [2, 1, 0]), [3 * c, int(weight.shape[0])])  # [3 C_in, C_out]
    return times_weight(taps, kernel, tile)


def mlp(p: Params, name: str, x: TensorValue) -> TensorValue:
    return linear(p, f"{name}.mlp.2", ops.gelu(linear(p, f"{name}.mlp.0", x)))


def head_scale(dims_state: int, n_head: int) -> float:
    """openai-whisper scales q and k each by d_head^-0.25."""
    return float((dims_state // n_head) ** -0.25)
