"""openai-whisper itself, loaded with the very weights a bundle holds: the reference for tests
and `scripts/conformance.py`."""

from __future__ import annotations

import numpy as np

from .weights import ModelWeights


def openai_whisper_model(weights: ModelWeights):
    """A `whisper.model.Whisper` in fp32 on the CPU with `weights` loaded, as `load_model` would."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(**weights.dims.to_dict()))
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.tensors.items()}
    model.load_state_dict(state)
    if weights.alignment_heads:
        mask = torch.zeros(weights.dims.n_text_layer, weights.dims.n_text_head, dtype=torch.bool)
        for layer, head in weights.alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.float().eval()
