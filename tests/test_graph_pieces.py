"""GPU-only graph pieces, checked on the CPU where they can run: the GPU encoder's im2col
convolution must equal the direct convolution the CPU target uses."""

from __future__ import annotations

import numpy as np


def test_conv_as_matmul_equals_direct_conv():
    from max.driver import CPU
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType

    from mxwc.graphs import Params, conv1d, conv1d_as_matmul

    rng = np.random.default_rng(0)
    weights = {"c1.weight": rng.standard_normal((24, 16, 3)).astype(np.float32),
               "c1.bias": np.zeros(24, np.float32),
               "c2.weight": rng.standard_normal((24, 24, 3)).astype(np.float32),
               "c2.bias": np.zeros(24, np.float32)}
    shapes = {k: v.shape for k, v in weights.items()}
    device = DeviceRef.CPU()
    with Graph("conv_paths", input_types=[TensorType(DType.float32, [2, 40, 16], device)]) as graph:
        p = Params(shapes, DType.float32, device)
        x = graph.inputs[0].tensor
        direct1 = conv1d(p, "c1", x, stride=1)  # the CPU path: ops.conv2d
        direct2 = conv1d(p, "c2", direct1, stride=2)
        im2col1 = conv1d_as_matmul(p("c1.weight"), x, stride=1)
        im2col2 = conv1d_as_matmul(p("c2.weight"), im2col1, stride=2)
        graph.output(direct1, direct2, im2col1, im2col2)
    model = InferenceSession(devices=[CPU()]).load(graph, weights_registry=weights)
    x = rng.standard_normal((2, 40, 16)).astype(np.float32)
    d1, d2, m1, m2 = (out.to_numpy() for out in model.execute(x))
    assert d2.shape == m2.shape == (2, 20, 24)
    np.testing.assert_allclose(m1, d1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m2, d2, rtol=1e-5, atol=1e-4)

    # And against numpy's definition of the convolution (kernel 3, padding 1).
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    expected = sum(padded[:, k : k + 40, :] @ weights["c1.weight"][:, :, k].T for k in range(3))
    np.testing.assert_allclose(d1, expected, rtol=1e-5, atol=1e-4)
