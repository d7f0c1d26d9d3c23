#!/usr/bin/env bash
# Sets up a fresh machine for mxw:
#   .venv          compiler + tests: mxw[compile,models,test,sign,serve,ray] (openai-whisper, CPU torch, real
#                  weights; the server's packages and the openai client for mxwr serve's tests; Ray Data
#                  for mxwr cluster's)
#   .venv-runtime  the edge runtime alone: `pip install .[sign]` (max, numpy, msgpack, zstandard, click;
#                  cryptography, for --require-signature)
# and ffmpeg, which openai-whisper's reference audio loader (and mxwr, for non-WAV audio) needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ffmpeg"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "setup: warning: ffmpeg is not installed; the tests need it (openai-whisper's load_audio)" >&2
  fi
fi

echo "setup: .venv (compiler, tests)"
"$PYTHON" -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".[compile,models,test,sign,serve,ray]"

echo "setup: .venv-runtime (runtime only: no torch, no openai-whisper)"
"$PYTHON" -m venv .venv-runtime
.venv-runtime/bin/pip install -q ".[sign]"
.venv-runtime/bin/python - <<'PY'
import importlib.util, sys
leaked = [m for m in ("torch", "whisper", "starlette", "uvicorn", "multipart", "python_multipart",  # nor mxw[serve]'s
                      "ray", "pyarrow")  # nor mxw[ray]'s
          if importlib.util.find_spec(m)]
sys.exit(f"setup: the runtime environment must not contain {leaked}" if leaked else 0)
PY
echo "setup: done"
