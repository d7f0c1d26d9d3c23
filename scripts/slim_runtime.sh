#!/usr/bin/env bash
# The slim edge install: the runtime installed as .venv-runtime gets it (`pip install .`), then
# pruned to what loading and running a bundle uses.
#
#   bash scripts/slim_runtime.sh DEST [--gpu] [--sign] [--check BUNDLE AUDIO]
#
# DEST       the virtual environment to create (replaced if it exists); DEST/bin/mxwr transcribes.
# --gpu      also keep what a GPU host may load (GPU_ONLY below).
# --sign     install mxw[sign] (cryptography, for `mxwr run --require-signature`); nothing of it
#            is pruned.
# --check    after pruning, transcribe AUDIO with BUNDLE and print the transcript, so a pruning
#            that broke the runtime fails here, not on the edge host.
#
# How the lists were made: a CPU transcription was traced (strace -f -e trace=file on `mxwr run`:
# every shared library it maps), its imports read (sys.modules at exit, with a text prompt so
# that tiktoken's path is in), and each group below deleted and the transcription run again.
# Every path named must exist: a MAX (numpy, zstandard) release that moves things stops this
# script with a message instead of shipping a half-pruned environment. After pruning the script
# imports what mxwr imports, and --check transcribes for real.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}

usage() { echo "usage: $0 DEST [--gpu] [--sign] [--check BUNDLE AUDIO]" >&2; exit 2; }
[ $# -ge 1 ] || usage
DEST=$1; shift
GPU=0; SIGN=0; CHECK=()
while [ $# -gt 0 ]; do
  case $1 in
    --gpu) GPU=1; shift ;;
    --sign) SIGN=1; shift ;;
    --check) [ $# -ge 3 ] || usage; CHECK=("$2" "$3"); shift 3 ;;
    *) usage ;;
  esac
done
say() { echo "slim: $*" >&2; }

rm -rf "$DEST"
"$PYTHON" -m venv "$DEST"
DEST=$(cd "$DEST" && pwd)
say "installing the runtime into $DEST"
"$DEST/bin/pip" install -q "$ROOT$([ "$SIGN" = 1 ] && echo '[sign]')"
SP=$("$DEST/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
before=$(du -sm "$DEST" | cut -f1)

remove() {  # remove PATTERN...: each relative to site-packages, each must match something
  local p matches
  for p in "$@"; do
    # shellcheck disable=SC2206  # meant to expand: ABI-tagged names (*.cpython-311-...so)
    matches=("$SP"/$p)
    # A glob that matches nothing stays literal, so a renamed or moved file is caught here too.
    [ -e "${matches[0]}" ] || { say "$p is not in site-packages: MAX's (or numpy's, zstandard's) layout changed; update this script"; exit 1; }
    rm -rf "${matches[@]}"
  done
}

# --- MAX's compiler toolchain (wheels mojo-compiler, max-mojo-libs, mojo-compiler-mojo-libs) --
# A bundle holds compiled graphs (MEF: x86-64 objects for the CPU target, CUDA cubins for a GPU
# one): loading it compiles and links nothing in-process or out, so neither the compiler, nor
# the linker, nor the Mojo packages a graph compile imports is opened. libKGENCompilerRTShared,
# libAsyncRTRuntimeGlobals and libMSupportGlobals come in the same wheel but are the runtime's:
# libmax.so links them, so they stay.
TOOLCHAIN=(
  modular/bin/mojo     # the Mojo compiler, 139 MiB (a placeholder takes its place, see below)
  modular/bin/lld      # the linker, 114 MiB
  modular/lib/mojo     # .mojoc packages (std, nn, linalg, ...) that compiling kernels imports, 31 MiB
  mxwc                 # our compiler: it needs torch and the toolchain above
)
TOOLCHAIN_BIN=(mojo lld mxwc)  # their console scripts in DEST/bin

# --- GPU and cluster libraries a CPU host never loads (wheels max-core, max-shmem-libs) -------
GPU_ONLY=(
  modular/lib/libNVPTX.so  # LLVM's NVPTX back end, MAX's in-process PTX assembler, 39 MiB
)
CLUSTER=(                  # nothing that libmax.so, libMGPRT.so or max/_core names: multi-GPU
  modular/lib/libnvshmem_host.so.3          # NVSHMEM (multi-GPU, multi-node shared memory), 32 MiB with its transports
  modular/lib/nvshmem_transport_ibgda.so.6  # its InfiniBand transports and MPI bootstrap
  modular/lib/nvshmem_transport_ibrc.so.6
  modular/lib/nvshmem_bootstrap_mpi.so.3
  modular/lib/nixl     # NIXL transport plugins (UCX, libfabric, UCCL; CUDA and ROCm builds) that
                       # move KV caches between serving nodes, 16 MiB; libnixl.so itself stays:
                       # libmax.so links it
  modular/lib/libjemalloc_preload.so        # an LD_PRELOAD allocator for `max serve`
)

# --- Python parts of max that loading and running a bundle never imports ---------------------
# `mxwr run` imports max.driver, .dtype, .engine, .graph, .profiler, .mlir, ._core*, ._mlir*
# and a few helpers (sys.modules). These are the serving and model-building stacks beside them.
MAX_PY=(
  max/pipelines max/serve max/benchmark max/nn max/experimental max/_entrypoints max/_xgrammar
  max/_kv_core.so max/_kv_cache_ops max/_interpreter_ops
  max/include          # C headers
)

# --- numpy's and zstandard's build tools and test modules -------------------------------------
# numpy keeps its whole public API (ma, polynomial, testing, ... stay); its build tools and the
# extension modules only its own test suite loads go, and its tests/ folders below.
NUMPY=(
  numpy/f2py numpy/distutils numpy/_pyinstaller
  numpy/_core/_simd.cpython-*.so numpy/_core/_multiarray_tests.cpython-*.so
  numpy/_core/_umath_tests.cpython-*.so numpy/_core/_rational_tests.cpython-*.so
  numpy/_core/_struct_ufunc_tests.cpython-*.so numpy/_core/_operand_flag_tests.cpython-*.so
)
ZSTD=(zstandard/_cffi.cpython-*.so zstandard/backend_cffi.py)  # the CFFI back end (11 MiB): the C one is used

# --- Whole distributions `mxwr run` never imports ---------------------------------------------
# max's console UI (rich, pygments, markdown-it-py, mdurl); requests and its stack, which
# tiktoken needs only to download a published encoding (mxwr builds its BPE from the bundle's own
# vocabulary); pip and setuptools, dead weight once installed (re-create the environment to
# upgrade it). Kept although max declares them: exceptiongroup and taskgroup (max imports them
# on Python < 3.11), msgspec, psutil and typing_extensions (imported by max.profiler, max.graph).
UNUSED_DISTS=(rich pygments markdown-it-py mdurl requests urllib3 idna certifi charset-normalizer)

for group in TOOLCHAIN CLUSTER MAX_PY NUMPY ZSTD; do
  declare -n paths=$group
  remove "${paths[@]}"
done
if [ "$GPU" = 0 ]; then remove "${GPU_ONLY[@]}"; fi
for b in "${TOOLCHAIN_BIN[@]}"; do
  [ -e "$DEST/bin/$b" ] || { say "bin/$b is missing: the install's layout changed; update this script"; exit 1; }
  rm -f "$DEST/bin/$b"
done
# MAX finds its own libraries by the presence of modular/bin/mojo (the rule mojo/_package_root.py
# spells out; strace shows the probe): without that file, loading a graph fails with "unable to
# locate compiler_rt /lib/libKGENCompilerRTShared.so". So the compiler's place keeps a
# three-line placeholder that says what happened if anyone runs it.
cat > "$SP/modular/bin/mojo" <<'SH'
#!/bin/sh
echo "mojo: the Mojo compiler is not part of this slim mxw runtime (scripts/slim_runtime.sh); MAX only needs this file to exist" >&2
exit 127
SH
chmod +x "$SP/modular/bin/mojo"

# numpy's test suites (17 MiB), one tests/ folder per submodule.
[ -n "$(find "$SP/numpy" -type d -name tests -print -quit)" ] || { say "numpy has no tests/ folders: its layout changed; update this script"; exit 1; }
find "$SP/numpy" -type d -name tests -prune -exec rm -rf {} +
# Type stubs (.pyi) are for type checkers; the interpreter never reads them (2 MiB).
find "$SP" -name '*.pyi' -type f -delete

# Debug sections (DWARF) of Python extension modules: zstandard's C back end ships 10.6 MB of
# them in an 11.6 MB file, regex, msgpack and psutil 3 MB more (13 MiB in all).
# `strip --strip-debug` removes only the .debug_* sections. Left alone: the libraries auditwheel
# vendored (numpy.libs/), whose headers patchelf rewrote (strip breaks them: "ELF load command
# address/offset not page-aligned", seen with OpenBLAS), and MAX's modular/ (already stripped).
# Without binutils the step is skipped, and the 13 MiB stay.
if command -v strip >/dev/null 2>&1 && command -v readelf >/dev/null 2>&1; then
  find "$SP" \( -path "$SP/*.libs" -o -path "$SP/modular" \) -prune -o -name '*.so' -type f -print0 |
    while IFS= read -r -d '' so; do
      if readelf -S -W "$so" | grep -q ' \.debug_info '; then strip --strip-debug "$so"; fi
    done
else
  say "note: no strip/readelf (binutils): debug sections kept (13 MiB)"
fi

"$DEST/bin/python" - "${UNUSED_DISTS[@]}" <<'PY'
import importlib.metadata as md, sys
missing = [d for d in sys.argv[1:] if not any(True for _ in md.distributions(name=d))]
sys.exit(f"slim: {missing} are no longer installed with max: update this script" if missing else 0)
PY
"$DEST/bin/python" -m pip uninstall -q -y "${UNUSED_DISTS[@]}" pip setuptools
# The bytecode of what was removed went with it; the kept modules' __pycache__ (10 MiB) stays: it
# spares every start the recompilation, and an edge environment may well be read-only.

# What mxwr imports on every run, so that a missing piece fails now.
"$DEST/bin/python" -c "import mxwr.cli, mxwr.transcribe, max.engine, max.driver, max.graph, numpy, zstandard, msgpack, tiktoken"
if [ "$SIGN" = 1 ]; then "$DEST/bin/python" -c "import cryptography.hazmat.primitives.asymmetric.ed25519"; fi

after=$(du -sm "$DEST" | cut -f1)
say "size: ${after} MiB (du -sm $DEST; ${before} MiB before pruning; $([ "$GPU" = 1 ] && echo "GPU host" || echo "CPU host")$([ "$SIGN" = 1 ] && echo ", with signatures"); the Python interpreter it links to is not counted)"
say "its largest parts (MiB):"
(cd "$SP" && du -sm modular/lib/libmax.so modular/lib/libMGPRT.so max numpy.libs numpy \
   $([ "$GPU" = 1 ] && echo modular/lib/libNVPTX.so) $([ "$SIGN" = 1 ] && echo cryptography) tiktoken regex zstandard | sed 's/^/slim:   /' >&2)
if [ ${#CHECK[@]} -gt 0 ]; then
  say "transcribing ${CHECK[1]} with ${CHECK[0]}:"
  "$DEST/bin/mxwr" run "${CHECK[@]}"
fi
