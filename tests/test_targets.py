"""Targets: GPU bundles cross-compiled on this CPU-only host, and which target a host may run."""

from __future__ import annotations

import numpy as np
import pytest

from mxwr.bundle import BundleReader
from mxwr.errors import MxwError
from mxwr.graphspec import SPECS, Layout
from mxwr.manifest import GraphEntry, Target
from mxwr.targets import select_target
from support import DEV, assert_one_line_error, run_cli

JFK = DEV / "jfk_inaugural.wav"
REPLAYED = [role for role, spec in SPECS.items() if spec.replayed]


def entry(name: str, dtype: str = "float32") -> Target:
    graphs = {role: GraphEntry(role, f"graph.{name}.{role}", (), ()) for role in ("encoder", "prefill", "step")}
    return Target(name, dtype, f"weights.{dtype}", Layout.of(name != "cpu", dtype), graphs)


BOTH = [entry("cpu"), entry("cuda:sm_90a", "float16")]


def test_auto_prefers_the_matching_gpu():
    assert select_target(BOTH, "auto", offered=["cpu", "cuda:sm_90a"]).name == "cuda:sm_90a"
    assert select_target(BOTH, "auto", offered=["cpu", "cuda:sm_80"]).name == "cpu"
    assert select_target(BOTH, "auto", offered=["cpu"]).name == "cpu"
    assert select_target(BOTH, "cpu", offered=["cpu", "cuda:sm_90a"]).name == "cpu"


def test_gpu_index_selects_that_gpu():
    t = select_target(BOTH, "gpu:1", offered=["cpu", "cuda:sm_80", "cuda:sm_90a"])
    assert (t.name, t.gpu_index) == ("cuda:sm_90a", 1)


@pytest.mark.parametrize("device, offered, message", [
    ("gpu", ["cpu"], "asked for a GPU but none is visible"),
    ("gpu", ["cpu", "cuda:sm_80"], "no compiled target for the GPU"),
    ("gpu:3", ["cpu", "cuda:sm_90a"], "no such GPU"),
    ("tpu", ["cpu"], "unknown device"),
])
def test_refusals_name_both_sides(device, offered, message):
    with pytest.raises(MxwError, match=message) as e:
        select_target(BOTH, device, offered=offered)
    if "unknown" not in message:
        assert "cuda:sm_90a" in str(e.value) and "this host offers" in str(e.value)


def test_gpu_only_bundle_has_no_target_for_a_cpu_host():
    with pytest.raises(MxwError, match=r"no usable target: the bundle has targets \[cuda:sm_90a\], this host offers \[cpu\]"):
        select_target([entry("cuda:sm_90a", "float16")], "auto", offered=["cpu"])


@pytest.fixture(scope="session")
def gpu_bundle(tmp_path_factory):
    """A bf16 bundle for sm_90a, cross-compiled here with MAX virtual devices (no align graph:
    nothing here runs it, and each graph is minutes of a cold CI run)."""
    out = tmp_path_factory.mktemp("gpu") / "tiny.en-sm90a.mxw"
    run_cli("mxwc", "build", "--model", "tiny.en", "--offline", "--target", "cuda:sm_90a",
            "--dtype", "bfloat16", "--no-word-timestamps", "-o", str(out), check=True)
    return out


def test_cross_compiled_bundle_describes_gpu_graphs(gpu_bundle, tiny_weights):
    import torch

    with BundleReader(gpu_bundle) as reader:
        (target,) = reader.manifest.to_dict()["targets"]
        assert (target["name"], target["dtype"]) == ("cuda:sm_90a", "bfloat16")
        step = target["graphs"]["step"]
        devices = {i["name"]: i["device"] for i in step["inputs"]}
        assert devices["token"] == devices["position"] == devices["self_k.0"] == "gpu"
        # A recorded device graph cannot re-read host memory: the replayed graphs read none.
        for role in REPLAYED:
            if role in target["graphs"]:
                assert {i["device"] for i in target["graphs"][role]["inputs"]} == {"gpu"}, role
        assert {i["dtype"] for i in step["inputs"] if i["name"].startswith("self_")} == {"bfloat16"}
        # bf16 weights are torch's rounding of the fp32 weights (stored as their 16-bit patterns).
        weights = reader.read_tensors("weights.bfloat16")
        for name in ("decoder.token_embedding.weight", "encoder.conv1.weight"):
            expected = torch.from_numpy(tiny_weights.tensors[name].astype(np.float32)).bfloat16().view(torch.int16)
            np.testing.assert_array_equal(weights[name].view(np.int16), expected.numpy())


def test_cpu_host_refuses_a_gpu_only_bundle(gpu_bundle):
    proc = run_cli("mxwr", "run", str(gpu_bundle), str(JFK))
    assert_one_line_error(proc, "no usable target", "[cuda:sm_90a]", "this host offers [cpu]")
