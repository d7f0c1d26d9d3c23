#!/usr/bin/env bash
# Step 1 of the GPU procedure (scripts/gpu/README.md), on the CPU build host.
# Cross-compiles the GPU bundles (no GPU needed), records the CPU tokens they must reproduce,
# stages MAX, and packs everything the device needs into <= 60 MB chunks under .device/ (ignored).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEV=${DEV:-../shared/data/dev}
ARCH=${ARCH:-sm_90a}
BATCH=${BATCH:-16}
mkdir -p artifacts/gpu

build() {  # build OUT ARGS... (skipped when OUT exists and is newer than the compiler sources)
  local out=$1; shift
  if [ -f "$out" ] && [ -z "$(find compiler runtime \( -name '*.py' -o -name '*.mojo' \) -newer "$out")" ]; then return; fi
  .venv/bin/mxwc build --model tiny.en --offline --no-word-timestamps "$@" -o "$out"
}
build artifacts/gpu/tiny.en-fp16.mxw --target "cuda:$ARCH" --dtype float16
build artifacts/gpu/tiny.en-fp32.mxw --target "cuda:$ARCH" --dtype float32
build artifacts/gpu/tiny.en-fp16-b$BATCH.mxw --target "cuda:$ARCH" --dtype float16 --batch "$BATCH"
build artifacts/tiny.en.mxw --target cpu

payload=.device/bench/payload
rm -rf .device/bench && mkdir -p "$payload/clips" "$payload/wheels"
cp "$DEV"/*.wav "$payload/clips/"
# The tokens the CPU target gives: the GPU's fp32 tokens must equal them.
.venv/bin/python - "$payload" <<'PY'
import json, sys
from pathlib import Path
from mxwr.transcribe import Transcriber
payload = Path(sys.argv[1])
clips = sorted((payload / "clips").glob("*.wav"))
results = Transcriber("artifacts/tiny.en.mxw", device="cpu").decode_files(clips)
tokens = {c.name: [t for seg in r["segments"] for t in seg["tokens"]] for c, r in zip(clips, results)}
(payload / "expected_cpu_tokens.json").write_text(json.dumps(tokens))
PY
# openai-whisper is not on the device image; it is pure Python (its other needs are there).
.venv/bin/pip wheel -q --no-deps -w "$payload/wheels" openai-whisper more-itertools 2>&1 | grep -v '^WARNING: Location' || true
cp artifacts/gpu/tiny.en-fp16.mxw artifacts/gpu/tiny.en-fp32.mxw "artifacts/gpu/tiny.en-fp16-b$BATCH.mxw" "$payload/"
# A/B runs: fp16 bundles put in artifacts/gpu/ab/ (earlier builds, variants) are benchmarked
# (mxw alone) on the same machine just before the side-by-side run.
if ls artifacts/gpu/ab/*.mxw >/dev/null 2>&1; then mkdir -p "$payload/ab" && cp artifacts/gpu/ab/*.mxw "$payload/ab/"; fi
# zstd with a 256 MB window: the bundles share their weights, so the long-range matcher packs them once.
.venv/bin/python - <<'PY'
import tarfile, zstandard
params = zstandard.ZstdCompressionParameters.from_level(10, window_log=28, enable_ldm=True)
with open(".device/bench/payload.tar.zst", "wb") as f:
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as z:
        with tarfile.open(fileobj=z, mode="w|") as tar:
            tar.add(".device/bench/payload", arcname="payload")
PY
rm -rf "$payload"
size=$(stat -c %s .device/bench/payload.tar.zst); n=$(( (size + 59999999) / 60000000 ))
split -n "$n" -d -a 1 .device/bench/payload.tar.zst .device/bench/payload.tar.zst. && rm .device/bench/payload.tar.zst
i=0; for part in .device/bench/payload.tar.zst.*; do mkdir -p ".device/bench/chunk$i"; mv "$part" ".device/bench/chunk$i/"; i=$((i+1)); done

mkdir -p "$(git rev-parse --git-dir)/info"  # the staging script records .device/ there
bash ../shared/tools/device-max-stage.sh >/dev/null
echo "staged: $(ls -d .device/max/chunk* | wc -l) MAX chunks, $i payload chunks. Device calls, back to back:"
for c in .device/max/chunk*; do
  last=$(ls -d .device/max/chunk* | tail -1)
  if [ "$c" = "$last" ]; then
    echo "  carry [\"$c\"]  command: cp $c/* /root/stash/ && bash $c/install.sh"
  else
    echo "  carry [\"$c\"]  command: mkdir -p /root/stash && cp $c/* /root/stash/"
  fi
done
for c in .device/bench/chunk*; do echo "  carry [\"$c\"]  command: mkdir -p /root/bench && cp $c/* /root/bench/"; done
echo "  then:  command: bash scripts/gpu/run_on_device.sh"
