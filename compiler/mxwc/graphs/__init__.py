"""The MAX graphs of a Whisper model, traced at fixed shapes from their specs (`mxwr.graphspec`).

A bundle holds one graph per role, six roles today. Four are always built:

- frontend: reflect-padded audio -> log-mel, openai-whisper's `log_mel_spectrogram` on the device.
- encoder: log-mel -> audio features and every decoder layer's cross-attention K and V
  (computed once per window, never again per token).
- prefill: the prompt, padded to a fixed length -> logits at its last real position and at
  start-of-transcript, and the greedy next token; writes the prompt's keys/values into the
  self-attention caches.
- step: one token per row at a position -> logits and the greedy next token; writes that
  position of the caches in place (mutable buffers) and attends over them.

Two where the build asks for them:

- reorder (several sequences per window: beam search): permutes the caches' rows in place.
- align (word timestamps): a whole token sequence -> the alignment heads' cross-attention
  scores and each next token's probability, as openai-whisper's `find_alignment` reads them.

Every builder takes a `GraphContext`: one target's dims, shape, weights, dtype, device and
`Layout`. The layout decides, explicitly, what 16-bit GPU targets do differently: attention
operands padded to the matmul tile (`layout`), cross V stored transposed, our own Mojo kernels
for the step's cache write and the logits (`kernels`), single-query attention in the step.
On a quantized target (`mxwr.quantization`) the products with int8 weights run by our int8
kernels (`kernels`), those with K-quant blocks by MAX's `qmatmul` (`layers`).

The arithmetic follows openai-whisper's `model.py` (`layers`, `attention`, `decoder`, `logits`);
`builders` puts the six graphs together.
"""

from .builders import BUILDERS, stft_basis
from .context import Alignment, GraphContext
from .kernels import KERNELS

__all__ = ["BUILDERS", "KERNELS", "Alignment", "GraphContext", "stft_basis"]
