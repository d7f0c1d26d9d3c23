"""Loading weights: CTranslate2 model folders (whole or split into parts across packages)."""

from __future__ import annotations

import numpy as np
import pytest

from mxwc.ct2 import CT2FormatError, read_model_bin
from mxwc.weights import _packaged_dir, load_weights


def test_split_model_across_package_folders(tmp_path, tiny_weights):
    """model.bin.part1 and .part2 in sibling package folders load as the whole model."""
    data = (_packaged_dir("tiny.en") / "model.bin").read_bytes()
    (tmp_path / "pkg_part1" / "data").mkdir(parents=True)
    (tmp_path / "pkg_part2" / "data").mkdir(parents=True)
    (tmp_path / "pkg_part1" / "data" / "model.bin.part1").write_bytes(data[: len(data) // 3])
    (tmp_path / "pkg_part2" / "data" / "model.bin.part2").write_bytes(data[len(data) // 3 :])
    split = load_weights(str(tmp_path / "pkg_part1" / "data"), log=lambda _: None)
    assert split.dims == tiny_weights.dims
    assert split.tensors.keys() == tiny_weights.tensors.keys()
    for name, array in tiny_weights.tensors.items():
        np.testing.assert_array_equal(split.tensors[name], array)


def test_missing_part_is_reported(tmp_path):
    data = (_packaged_dir("tiny.en") / "model.bin").read_bytes()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin.part1").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        load_weights(str(tmp_path / "m"), log=lambda _: None)


def test_state_dict_matches_openai_whisper_layout(tiny_weights):
    """Every parameter and buffer a fresh openai-whisper model has, with its shape, and nothing else."""
    from whisper.model import ModelDimensions, Whisper

    fresh = Whisper(ModelDimensions(**tiny_weights.dims.to_dict()))
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in tiny_weights.tensors.items()} == expected


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        load_weights("tiny-but-not-really", log=lambda _: None)


def test_garbage_model_bin(tmp_path):
    with pytest.raises(CT2FormatError):
        read_model_bin(b"\x06\x00\x00\x00" + b"\xff" * 10)


def test_openai_whisper_checkpoint_path(tmp_path, tiny_weights):
    """A `.pt` in openai-whisper's checkpoint format (dims + model_state_dict, fp16) loads by path."""
    import torch

    path = tmp_path / "tiny.en.pt"
    state = {k: torch.from_numpy(np.array(v)) for k, v in tiny_weights.tensors.items()}
    torch.save({"dims": tiny_weights.dims.to_dict(), "model_state_dict": state}, path)
    loaded = load_weights(str(path), log=lambda _: None)
    assert loaded.dims == tiny_weights.dims
    assert "checkpoint" in loaded.source
    for name, array in tiny_weights.tensors.items():
        np.testing.assert_array_equal(loaded.tensors[name], array)
