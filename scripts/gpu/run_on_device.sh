#!/usr/bin/env bash
# Step 3 of the GPU procedure (scripts/gpu/README.md), on the device machine, after the chunk
# calls: unpacks the payload, installs the carried wheels, runs the benchmark, writes to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=/root/site PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
work=/root/bench
if [ ! -d "$work/payload" ]; then
  cat "$work"/payload.tar.zst.* | python3 -c "
import sys, tarfile, zstandard
with zstandard.ZstdDecompressor(max_window_size=2**28).stream_reader(sys.stdin.buffer) as z:
    tarfile.open(fileobj=z, mode='r|').extractall('$work')"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /root/site "$work"/payload/wheels/*.whl
fi
p=$work/payload
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
for b in "$p"/ab/*.mxw; do  # A/B bundles, if any (prepare.sh); batch bundles (*-b<N>*) for throughput
  [ -f "$b" ] || continue
  n=ab-$(basename "$b" .mxw)
  case "$(basename "$b")" in
    *-b[0-9]*) bundles=(--fp16 "$p/tiny.en-fp16.mxw" --batch-bundle "$b"); batch=1 ;;
    *) bundles=(--fp16 "$b"); batch= ;;
  esac
  python3 scripts/bench_gpu.py "${bundles[@]}" --engines mxw --clips "$p/clips" \
    --out "$OUT/$n.json" --markdown "$OUT/$n.md" ${AB_ARGS:-} 2>&1 | tee "$OUT/$n.log"
  # A batch-1 bundle's own outputs against the payload's, token by token.
  [ -n "$batch" ] || python3 scripts/gpu/compare_logits.py "$b" "$p/tiny.en-fp16.mxw" "$p/clips" 2>&1 | tee -a "$OUT/$n.log"
done
[ -n "${AB_ONLY:-}" ] && exit 0  # the A/B bundles alone
python3 scripts/bench_gpu.py --fp16 "$p/tiny.en-fp16.mxw" --fp32 "$p/tiny.en-fp32.mxw" \
  --batch-bundle "$(ls "$p"/tiny.en-fp16-b*.mxw | head -1)" --clips "$p/clips" \
  --expected-cpu "$p/expected_cpu_tokens.json" --out "$OUT/bench_gpu.json" --markdown "$OUT/bench_gpu.md" \
  ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log"
