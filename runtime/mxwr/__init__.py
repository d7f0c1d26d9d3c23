"""mxwr — the mxw edge runtime: reads a .mxw bundle and transcribes audio with its compiled graphs.

Nothing here imports torch or openai-whisper.
"""

__version__ = "0.1.0"
