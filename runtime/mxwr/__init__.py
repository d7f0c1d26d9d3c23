"""mxw's edge runtime: reads a .mxw bundle and transcribes audio with its compiled graphs.

    import mxwr
    model = mxwr.load("tiny.en.mxw")          # mxwr.api: load, Model
    print(model.transcribe("audio.wav")["text"])

Nothing here imports torch or openai-whisper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AudioError", "BundleError", "Model", "MxwError", "load"]

from .errors import AudioError, BundleError, MxwError

if TYPE_CHECKING:
    from .api import Model, load


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `mxwr --help` and `import mxwr.errors` stay as light as they were.
    if name in ("load", "Model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
