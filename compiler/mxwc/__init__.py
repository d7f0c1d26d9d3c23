"""mxwc — the mxw compiler: Whisper checkpoints -> compiled MAX graphs -> one .mxw bundle."""

__version__ = "0.1.0"
